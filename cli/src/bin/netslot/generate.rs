//! generate: the shell completions (bash, zsh, fish) and man pages of `netslot`, made from
//! its own argument definitions. A hidden subcommand: `make install` runs it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Command, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Directory to write into (made if missing): completions/netslot.bash,
    /// completions/_netslot (zsh), completions/netslot.fish, and man/netslot.1 with one
    /// page per subcommand (man/netslot-up.1, ...).
    #[arg(long)]
    out_dir: PathBuf,
}

pub(crate) fn run(args: GenerateArgs) -> Result<ExitCode, String> {
    let completions = args.out_dir.join("completions");
    let man = args.out_dir.join("man");
    for dir in [&completions, &man] {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    for (shell, file) in [
        (Shell::Bash, "netslot.bash"),
        (Shell::Zsh, "_netslot"),
        (Shell::Fish, "netslot.fish"),
    ] {
        let path = completions.join(file);
        let mut out = create(&path)?;
        clap_complete::generate(shell, &mut visible(), "netslot", &mut out);
    }
    clap_mangen::generate_to(crate::Cli::command(), &man)
        .map_err(|e| format!("write the man pages in {}: {e}", man.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The command as a user sees it: clap_complete would also complete hidden subcommands
/// (this one), so the completions are made from a copy without them. The top level has no
/// arguments of its own to carry over (a test checks).
fn visible() -> Command {
    let full = crate::Cli::command();
    let mut cmd = Command::new("netslot")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(full.is_subcommand_required_set());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        cmd = cmd.long_about(about.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

fn create(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("create {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_completions_command_keeps_every_visible_subcommand_and_argument() {
        let full = crate::Cli::command();
        assert_eq!(
            full.get_arguments().count(),
            0,
            "top-level arguments to carry over"
        );
        let names = |c: &Command| -> Vec<String> {
            c.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| s.get_name().to_owned())
                .collect()
        };
        assert_eq!(names(&visible()), names(&full));
        assert!(visible().find_subcommand("generate").is_none());
        visible().debug_assert();
    }

    #[test]
    fn writes_completions_and_a_page_per_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("netslot-generate-{}", std::process::id()));
        run(GenerateArgs {
            out_dir: dir.clone(),
        })
        .unwrap();
        for (f, slots) in [
            ("netslot.bash", "--slots"),
            ("_netslot", "--slots"),
            ("netslot.fish", "-l slots"),
        ] {
            let text = std::fs::read_to_string(dir.join("completions").join(f)).unwrap();
            assert!(text.contains(slots), "{f} lacks `up --slots`");
            assert!(
                !text.contains("out-dir"),
                "{f} completes the hidden subcommand"
            );
        }
        for page in [
            "netslot.1",
            "netslot-up.1",
            "netslot-serve.1",
            "netslot-gc.1",
        ] {
            let text = std::fs::read_to_string(dir.join("man").join(page)).unwrap();
            assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
        }
        assert!(!dir.join("man/netslot-generate.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
