//! `ps:scale --wait`: when is a formation fully up?

use dyno_shared::api::{Dyno, FormationItem};

/// What keeps the formation from being up: empty once every type has exactly `quantity`
/// formation dynos `up` on the current release.
pub fn not_ready(formation: &[FormationItem], dynos: &[Dyno], release: Option<u32>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut items: Vec<&FormationItem> = formation.iter().collect();
    items.sort_by(|a, b| a.process_type.cmp(&b.process_type));
    for item in items {
        let of_type: Vec<&Dyno> = dynos
            .iter()
            .filter(|d| !d.one_off && d.process_type == item.process_type)
            .collect();
        let ready = |d: &Dyno| d.state == "up" && Some(d.release.version) == release;
        let up = of_type.iter().filter(|d| ready(d)).count();
        if up == item.quantity as usize {
            continue;
        }
        let mut details: Vec<String> = of_type
            .iter()
            .filter(|d| !ready(d))
            .map(|d| describe(d, release))
            .collect();
        if of_type.is_empty() {
            details.push("no dynos yet".into());
        }
        let mut line = format!("{}: {} of {} up", item.process_type, up, item.quantity);
        if !details.is_empty() {
            line.push_str(&format!(" ({})", details.join(", ")));
        }
        problems.push(line);
    }
    problems
}

/// `web.2 crashed (exit 1)`, `web.1 up on v2 (current v3)`, `worker.1 starting`.
fn describe(d: &Dyno, release: Option<u32>) -> String {
    let mut s = format!("{} {}", d.name, d.state);
    if let Some(code) = d
        .exit_code
        .filter(|_| d.state != "up" && d.state != "starting")
    {
        s.push_str(&format!(" (exit {code})"));
    }
    if let Some(current) = release.filter(|r| *r != d.release.version) {
        s.push_str(&format!(" on v{} (current v{current})", d.release.version));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::Size;

    fn dyno(name: &str, state: &str, release: u32, exit: Option<i32>) -> Dyno {
        Dyno {
            id: name.into(),
            name: name.into(),
            process_type: name.split('.').next().unwrap().into(),
            state: state.into(),
            size: Size::Standard1x,
            command: "x".into(),
            release: dyno_shared::api::ReleaseRef {
                id: format!("r{release}"),
                version: release,
            },
            host: None,
            address: None,
            created_at: String::new(),
            updated_at: String::new(),
            restarts: 0,
            exit_code: exit,
            one_off: false,
            healthy: true,
            stats: None,
            attach_url: None,
            app: None,
        }
    }

    fn item(t: &str, q: u32) -> FormationItem {
        FormationItem {
            id: String::new(),
            app: None,
            created_at: None,
            updated_at: None,
            dyno_size: None,
            process_type: t.into(),
            quantity: q,
            size: Size::Standard1x,
            command: "x".into(),
        }
    }

    #[test]
    fn ready_when_every_type_has_its_quantity_up_on_the_release() {
        let f = [item("web", 2), item("worker", 0)];
        let dynos = [dyno("web.1", "up", 3, None), dyno("web.2", "up", 3, None)];
        assert!(not_ready(&f, &dynos, Some(3)).is_empty());
        assert!(not_ready(&[], &[], None).is_empty());
    }

    #[test]
    fn reasons_name_each_dyno() {
        let f = [item("web", 2), item("worker", 1)];
        let dynos = [
            dyno("web.1", "up", 2, None),
            dyno("web.2", "crashed", 3, Some(1)),
        ];
        assert_eq!(
            not_ready(&f, &dynos, Some(3)),
            vec![
                "web: 0 of 2 up (web.1 up on v2 (current v3), web.2 crashed (exit 1))",
                "worker: 0 of 1 up (no dynos yet)"
            ]
        );
    }

    #[test]
    fn too_many_up_is_not_ready_and_one_offs_do_not_count() {
        let f = [item("web", 1)];
        let mut run = dyno("web.9", "up", 3, None);
        run.one_off = true;
        let dynos = [
            dyno("web.1", "up", 3, None),
            dyno("web.2", "up", 3, None),
            run,
        ];
        assert_eq!(not_ready(&f, &dynos, Some(3)), vec!["web: 2 of 1 up"]);
    }
}
