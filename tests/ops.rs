//! Operating netslot on a host: `make install`'s script into a private prefix (units that
//! `systemd-analyze verify` accepts, man pages, completions, `--version`), the start-up
//! kernel check, and the command's logs (no colour into a file, a warn line naming every
//! removal). Nothing is installed outside the test's temporary prefix.

use std::path::{Path, PathBuf};
use std::process::Command;

use netslot_kernel_tests::*;

/// A fresh scratch directory, removed when dropped (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "netslot-{what}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every regular file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Runs scripts/install.sh (what `make install` runs after its release build) on the
/// binaries built next to this test.
fn install_script(action: &str, prefix: &Path) -> std::process::Output {
    let build_dir = netslot().parent().unwrap().to_path_buf();
    Command::new(repo().join("scripts/install.sh"))
        .arg(action)
        .env("PREFIX", prefix)
        .env("CNI_BIN_DIR", prefix.join("cni/bin"))
        .env("BUILD_DIR", &build_dir)
        .env_remove("DESTDIR")
        .output()
        .expect("run scripts/install.sh")
}

#[test]
fn install_into_a_prefix_gives_verified_units_man_pages_completions_and_version() {
    if !require_root("install_into_a_prefix_gives_verified_units_man_pages_completions_and_version")
    {
        return;
    }
    let scratch = Scratch::new("install");
    let prefix = scratch.0.join("prefix");
    let out = install_script("install", &prefix);
    assert!(
        out.status.success(),
        "install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The binaries, and the version the crate says.
    let version = Command::new(prefix.join("bin/netslot"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("netslot {}", env!("CARGO_PKG_VERSION"))
    );
    let cni = Command::new(prefix.join("cni/bin/netslot-cni"))
        .arg("--version")
        .env_remove("CNI_COMMAND")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cni.stdout).trim(),
        format!("netslot-cni {}", env!("CARGO_PKG_VERSION"))
    );

    // Units with the installed paths, and nothing left to substitute.
    let units = prefix.join("lib/systemd/system");
    let service = std::fs::read_to_string(units.join("netslot.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart={} serve",
            prefix.join("bin/netslot").display()
        )),
        "{service}"
    );
    assert!(
        service.contains(&format!(
            "file://{}",
            prefix.join("share/doc/netslot/serve.md").display()
        )),
        "{service}"
    );
    assert!(!service.contains('@'), "placeholder left: {service}");
    assert!(prefix.join("share/doc/netslot/serve.md").is_file());
    assert!(prefix.join("share/doc/netslot/README.md").is_file());

    // systemd's own check: syntax, the ExecStart binary, the socket the service requires,
    // and (through `man`, pointed at the prefix) the man page Documentation= names.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("netslot.socket"))
        .arg(units.join("netslot.service"))
        .env("MANPATH", prefix.join("share/man"))
        .output()
        .expect("run systemd-analyze (package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("netslot"),
        "systemd-analyze verify complains about the units: {said}"
    );

    // Man pages for the command and each subcommand, readable by man.
    for page in [
        "netslot",
        "netslot-up",
        "netslot-down",
        "netslot-gc",
        "netslot-serve",
    ] {
        let path = prefix.join(format!("share/man/man1/{page}.1"));
        assert!(path.is_file(), "{} missing", path.display());
    }
    let man = Command::new("man")
        .args(["-P", "cat", "netslot-up"])
        .env("MANPATH", prefix.join("share/man"))
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&man.stdout).contains("--slots"),
        "man netslot-up: {}",
        String::from_utf8_lossy(&man.stderr)
    );

    // Completions where bash-completion, zsh and fish look under the prefix.
    for (file, shell_says, slots) in [
        (
            "share/bash-completion/completions/netslot",
            "complete -F",
            "--slots",
        ),
        (
            "share/zsh/site-functions/_netslot",
            "#compdef netslot",
            "--slots",
        ),
        (
            "share/fish/vendor_completions.d/netslot.fish",
            "complete -c netslot",
            "-l slots",
        ),
    ] {
        let text = std::fs::read_to_string(prefix.join(file)).unwrap();
        assert!(text.contains(shell_says), "{file}");
        assert!(text.contains(slots), "{file} lacks `up --slots`");
        assert!(
            !text.contains("out-dir"),
            "{file} completes a hidden subcommand"
        );
    }
    let bash = Command::new("bash")
        .arg("-n")
        .arg(prefix.join("share/bash-completion/completions/netslot"))
        .status()
        .unwrap();
    assert!(bash.success(), "the bash completion does not parse");

    // Uninstall removes every file it installed.
    let out = install_script("uninstall", &prefix);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(files_under(&prefix), Vec::<String>::new());
}

#[test]
fn up_passes_the_kernel_check_and_logs_carry_no_colour_and_name_removals() {
    if !require_root("up_passes_the_kernel_check_and_logs_carry_no_colour_and_name_removals") {
        return;
    }
    // Default log level (no NETSLOT_LOG/RUST_LOG), stderr into files, not a terminal.
    // lg1 loses its host end, so gc has an incomplete slot (its pin) to remove.
    let (log, dir) = in_private_world(
        r#"
        unset NETSLOT_LOG RUST_LOG
        $NS up --slots 3 --prefix lg --group 7730 > /dev/null 2> $D/up.err
        ip link del lg1
        $NS gc --prefix lg --group 7730 > /dev/null 2> $D/gc.err
        $NS down --prefix lg --group 7730 > /dev/null 2> $D/down.err
        NETSLOT_LOG=error RUST_LOG=info $NS up --slots 1 --prefix lh --group 7731 > /dev/null 2> $D/quiet-up.err
        NETSLOT_LOG=error RUST_LOG=info $NS down --prefix lh --group 7731 > /dev/null 2> $D/quiet-down.err
        RUST_LOG=netslot=debug $NS up --slots 1 --prefix li --group 7732 > /dev/null 2> $D/debug-up.err
        $NS down --prefix li --group 7732 > /dev/null 2>&1
        "#,
    );
    let up = read(&dir, "up.err");
    let gc = read(&dir, "gc.err");
    let down = read(&dir, "down.err");
    for (name, text) in [("up", &up), ("gc", &gc), ("down", &down)] {
        assert!(
            !text.contains('\x1b'),
            "{name}: escape codes in a file: {text:?}"
        );
    }
    // `up` on this kernel passed the start-up check (it would have failed naming 6.18).
    assert!(!up.contains("6.18"), "{log}\n{up}");
    // The removals are logged at warn, naming what went.
    let gc_line = gc
        .lines()
        .find(|l| l.contains("gc: removed"))
        .unwrap_or_else(|| panic!("no gc warn line: {gc:?}"));
    assert!(gc_line.contains(" WARN "), "{gc_line}");
    assert!(gc_line.contains("/run/netns/lg1"), "{gc_line}");
    assert!(
        !gc_line.contains("lg0") && !gc_line.contains("lg2"),
        "{gc_line}"
    );
    let down_line = down
        .lines()
        .find(|l| l.contains("down: removed the pool"))
        .unwrap_or_else(|| panic!("no down warn line: {down:?}"));
    assert!(down_line.contains(" WARN "), "{down_line}");
    assert!(
        down_line.contains("lg0") && down_line.contains("lg2"),
        "{down_line}"
    );
    // NETSLOT_LOG wins over RUST_LOG; RUST_LOG alone is honoured.
    let quiet = read(&dir, "quiet-down.err");
    assert!(
        !quiet.contains("WARN"),
        "NETSLOT_LOG=error let a warn through: {quiet}"
    );
    let debug = read(&dir, "debug-up.err");
    assert!(
        debug.contains(" DEBUG ") && debug.contains("group changes"),
        "RUST_LOG=netslot=debug showed no debug line: {debug}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
