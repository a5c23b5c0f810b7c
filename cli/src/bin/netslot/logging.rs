//! logging: the `netslot` command's log subscriber: which variable sets the level, the
//! default level, and no colour unless stderr is a terminal.
//!
//! The level comes from `NETSLOT_LOG`, else `RUST_LOG` (both in `tracing_subscriber`'s
//! `EnvFilter` syntax, e.g. `info` or `netslot=debug`; an empty value counts as unset).
//! Without either it is `warn`, so that every removal of kernel state shows, and `info`
//! for the daemon (`netslot serve`), which also logs its rounds, attaches and detaches.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The variables, in the order they win.
const VARS: [&str; 2] = ["NETSLOT_LOG", "RUST_LOG"];

/// Installs the subscriber (stderr). `daemon`: `netslot serve`, whose default is `info`.
pub(crate) fn init(daemon: bool) {
    let default = default_level(daemon);
    let chosen = choose(|var| std::env::var(var).ok());
    let (filter, bad) = match &chosen {
        Some((var, value)) => match EnvFilter::try_new(value) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(default),
                Some(format!("{var}={value:?}: {e}")),
            ),
        },
        None => (EnvFilter::new(default), None),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(bad) = bad {
        tracing::warn!("ignoring {bad}; logging at the default level {default}");
    }
}

fn default_level(daemon: bool) -> &'static str {
    if daemon {
        "info"
    } else {
        "warn"
    }
}

/// The first of [`VARS`] that is set to something, and its value.
fn choose(get: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    VARS.iter()
        .find_map(|&var| get(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn netslot_log_wins_over_rust_log() {
        let both = [("RUST_LOG", "debug"), ("NETSLOT_LOG", "error")];
        assert_eq!(
            choose(env(&both)),
            Some(("NETSLOT_LOG", "error".to_string()))
        );
    }

    #[test]
    fn rust_log_alone_is_honoured() {
        let only = [("RUST_LOG", "netslot=debug")];
        assert_eq!(
            choose(env(&only)),
            Some(("RUST_LOG", "netslot=debug".to_string()))
        );
    }

    #[test]
    fn empty_counts_as_unset() {
        let empty = [("NETSLOT_LOG", " "), ("RUST_LOG", "info")];
        assert_eq!(choose(env(&empty)), Some(("RUST_LOG", "info".to_string())));
        assert_eq!(choose(env(&[])), None);
    }

    #[test]
    fn defaults_are_warn_and_info_for_the_daemon() {
        assert_eq!(default_level(false), "warn");
        assert_eq!(default_level(true), "info");
        // Both parse as filters.
        EnvFilter::try_new(default_level(false)).unwrap();
        EnvFilter::try_new(default_level(true)).unwrap();
    }
}
