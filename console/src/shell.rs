//! Turning `dyno run -- CMD ARGS...` into the one command string a dyno's shell runs.

/// Characters that never need quoting in a POSIX shell word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c)
}

/// One argument as a shell word: untouched when plain, else single-quoted.
pub fn quote(arg: &str) -> String {
    if arg.is_empty() {
        return "''".to_string();
    }
    if arg.chars().all(is_plain) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// A single argument is taken as a whole command line, as heroku does (`dyno run "rake test"`);
/// several arguments are quoted so each reaches the program as typed.
pub fn command_line(args: &[String]) -> String {
    match args {
        [one] => one.clone(),
        _ => args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> String {
        command_line(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(line(&["dyno-probe", "echo", "hi"]), "dyno-probe echo hi");
        assert_eq!(
            line(&["dyno-probe", "echo", "hello world"]),
            "dyno-probe echo 'hello world'"
        );
        assert_eq!(line(&["echo", "it's"]), r"echo 'it'\''s'");
        assert_eq!(line(&["echo", ""]), "echo ''");
        assert_eq!(line(&["sh", "-c", "echo $DYNO"]), "sh -c 'echo $DYNO'");
        assert_eq!(line(&["ls", "a;b", "*"]), "ls 'a;b' '*'");
        assert_eq!(line(&["env", "A=b/c:d"]), "env A=b/c:d");
    }

    #[test]
    fn one_argument_is_a_whole_command_line() {
        assert_eq!(line(&["rake test && echo ok"]), "rake test && echo ok");
    }
}
