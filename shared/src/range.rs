//! The Platform API's `Range` header for lists: `version ]3..; max=10, order=desc`.

/// A parsed `Range`: sort by `field`, from `start` (exclusive with `]`) to `end`, `max` items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSpec {
    pub field: String,
    pub start: Option<String>,
    pub start_exclusive: bool,
    pub end: Option<String>,
    pub max: usize,
    pub desc: bool,
}

pub const DEFAULT_MAX: usize = 200;
pub const MAX_MAX: usize = 1000;

/// `None` for an empty or unparseable header: the caller answers the whole list.
pub fn parse(header: &str) -> Option<RangeSpec> {
    let mut parts = header
        .split([';', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let head = parts.next()?;
    let (field, bounds) = match head.split_once(char::is_whitespace) {
        Some((f, b)) => (f.trim(), b.trim()),
        None => (head, ""),
    };
    if field.is_empty()
        || !field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    let (mut start, mut start_exclusive, mut end) = (None, false, None);
    if !bounds.is_empty() {
        let (s, e) = bounds.split_once("..")?;
        let s = s.trim();
        let (s, excl) = match s.strip_prefix(']') {
            Some(rest) => (rest, true),
            None => (s.strip_prefix('[').unwrap_or(s), false),
        };
        start = (!s.is_empty()).then(|| s.to_string());
        start_exclusive = excl;
        let e = e.trim();
        end = (!e.is_empty()).then(|| e.to_string());
    }
    let (mut max, mut desc) = (DEFAULT_MAX, false);
    for p in parts {
        let (k, v) = p.split_once('=')?;
        match (k.trim(), v.trim()) {
            ("max", n) => max = n.parse::<usize>().ok()?.clamp(1, MAX_MAX),
            ("order", "asc") => desc = false,
            ("order", "desc") => desc = true,
            _ => return None,
        }
    }
    Some(RangeSpec {
        field: field.to_string(),
        start,
        start_exclusive,
        end,
        max,
        desc,
    })
}

/// A numeric bound, which may carry a `v` (`version ]v3..`).
pub fn numeric_bound(v: &str) -> Option<i64> {
    v.trim_start_matches('v').parse().ok()
}

/// One page of `items` ordered by `key`, with bounds read by `bound`.
pub fn page<T, K: Ord + std::fmt::Display>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> K,
    bound: impl Fn(&str) -> Option<K>,
    spec: &RangeSpec,
) -> Result<(Vec<T>, Option<String>), String> {
    let read = |s: &Option<String>| -> Result<Option<K>, String> {
        s.as_deref()
            .map(|v| {
                bound(v).ok_or_else(|| format!("invalid Range bound {v:?} for {}", spec.field))
            })
            .transpose()
    };
    let (start, end) = (read(&spec.start)?, read(&spec.end)?);
    items.sort_by_key(&key);
    if spec.desc {
        items.reverse();
    }
    let after_start = |k: &K| match &start {
        None => true,
        Some(s) if spec.desc => {
            if spec.start_exclusive {
                k < s
            } else {
                k <= s
            }
        }
        Some(s) => {
            if spec.start_exclusive {
                k > s
            } else {
                k >= s
            }
        }
    };
    let before_end = |k: &K| match &end {
        None => true,
        Some(e) if spec.desc => k >= e,
        Some(e) => k <= e,
    };
    let mut selected: Vec<T> = items
        .into_iter()
        .filter(|i| {
            let k = key(i);
            after_start(&k) && before_end(&k)
        })
        .collect();
    let next = if selected.len() > spec.max {
        selected.truncate(spec.max);
        let last = key(selected.last().expect("max >= 1"));
        Some(format!(
            "{} ]{last}..; max={}, order={}",
            spec.field,
            spec.max,
            if spec.desc { "desc" } else { "asc" }
        ))
    } else {
        None
    };
    Ok((selected, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_heroku_cli_sends() {
        let r = parse("version ..; max=10, order=desc;").unwrap();
        assert_eq!((r.field.as_str(), r.max, r.desc), ("version", 10, true));
        assert_eq!((r.start, r.end), (None, None));
        let r = parse("version ]3..7, max=2000").unwrap();
        assert_eq!(
            (r.start.as_deref(), r.start_exclusive, r.end.as_deref()),
            (Some("3"), true, Some("7"))
        );
        assert_eq!(r.max, MAX_MAX);
        assert_eq!(parse("id ..").unwrap().field, "id");
        for bad in [
            "",
            "version ..; max=x",
            "version ..; color=red",
            "ver sion 3",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_newest_first_and_says_where_the_next_page_starts() {
        let items: Vec<i64> = (1..=5).collect();
        let spec = parse("version ..; max=2, order=desc").unwrap();
        let (page, next) = super::page(items.clone(), |v| *v, numeric_bound, &spec).unwrap();
        assert_eq!(page, vec![5, 4]);
        let next = next.unwrap();
        assert_eq!(next, "version ]4..; max=2, order=desc");
        let (page, _) =
            super::page(items.clone(), |v| *v, numeric_bound, &parse(&next).unwrap()).unwrap();
        assert_eq!(page, vec![3, 2]);
        let (page, next) = super::page(
            items,
            |v| *v,
            numeric_bound,
            &parse("version 2..3").unwrap(),
        )
        .unwrap();
        assert_eq!((page, next), (vec![2, 3], None));
    }
}
