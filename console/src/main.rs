use clap::Parser;
use dyno_console::cli::Cli;
use dyno_console::error::exit_code;

fn main() {
    // clap exits 2 on bad usage and 0 for --help.
    let cli = Cli::parse();
    let code = match dyno_console::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let broken_pipe = err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            // `dyno logs | head` closing the pipe is not a failure.
            if broken_pipe {
                0
            } else {
                eprintln!("error: {err:#}");
                exit_code(&err)
            }
        }
    };
    std::process::exit(code);
}
