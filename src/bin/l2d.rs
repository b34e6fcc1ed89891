//! The `l2d` command line. Each subcommand's arguments and logic live in `l2d::cli` (and
//! `l2d::eval`), over the libraries; this file only parses and dispatches.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// L2D: diffusion finetuning of language models (Cetin, Zhao, Tang, ICML 2025).
#[derive(Debug, Parser)]
#[command(name = "l2d", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the diffusion path of a model on chat data.
    Train(l2d::cli::TrainArgs),
    /// Inspect chat data.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Complete prompts with a model and its diffusion adapter (tokens stream as they come).
    Generate(l2d::cli::GenerateArgs),
    /// Chat with a model and its diffusion adapter, one message per line of standard input.
    Chat(l2d::cli::ChatArgs),
    /// Show a model, an adapter and the diffusion path's parameter count.
    Info(l2d::cli::InfoArgs),
    /// Sweep settings (base, diffusion steps, adaptive solvers) over a task file.
    Eval(l2d::eval::EvalArgs),
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Show how chat files are tokenised and which tokens carry loss.
    Inspect(l2d::cli::DataInspectArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => {
            l2d::cli::run_train(&args)?;
        }
        Command::Data {
            command: DataCommand::Inspect(args),
        } => l2d::cli::run_data_inspect(&args, &mut std::io::stdout().lock())?,
        Command::Generate(args) => {
            l2d::cli::run_generate(&args, &mut std::io::stdout(), &mut std::io::stderr())?
        }
        Command::Chat(args) => {
            let stdin = std::io::stdin();
            l2d::cli::run_chat(
                &args,
                &mut stdin.lock(),
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )?;
        }
        Command::Info(args) => l2d::cli::run_info(&args, &mut std::io::stdout().lock())?,
        Command::Eval(args) => {
            let report = l2d::eval::run_eval(&args)?;
            tracing::info!(
                target: "l2d",
                "report: {}, plot: {} ({} settings)",
                args.report.display(),
                args.plot.display(),
                report.settings.len()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(&cli.command, Command::Train(args) if args.quiet);
    l2d::cli::logging::init(quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A line to standard error, best effort: a standard error that cannot be written (a full
/// disk, a closed pipe) does not stop the command. (Errors print whatever the log filter says.)
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_dispatches() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "l2d",
            "train",
            "--model",
            "m.gguf",
            "--train",
            "a.jsonl,b.jsonl",
            "--steps",
            "3",
        ])
        .unwrap();
        match cli.command {
            Command::Train(args) => {
                assert_eq!(args.train.len(), 2);
                assert_eq!(args.steps, Some(3));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["l2d", "data", "inspect", "x.jsonl", "--model", "m"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Data {
                command: DataCommand::Inspect(_)
            }
        ));
        assert!(Cli::try_parse_from(["l2d", "train", "--bogus"]).is_err());
    }
}
