//! error: what a failed subcommand reports, as text on stderr or, under `--json`, as a
//! JSON document on stdout, and the exit code that says what kind of failure it was.
//! Every library error is mapped here, once, to a [`Kind`].

use std::fmt;
use std::io;
use std::process::ExitCode;

use serde::Serialize;

use netslot::config::ConfigError;
use netslot::ownership::gc::{GcError, RecordError};
use netslot::EngineError;

/// Version of every `--json` document (reports and errors alike). Raised when a field
/// changes meaning or goes away; new fields do not raise it.
pub(crate) const SCHEMA: u32 = 1;

/// Exit code of a command that completed but left some objects failed or untouched
/// (the report lists them). Not an error document: the report is printed.
pub(crate) const PARTIAL: u8 = 1;

/// The exit codes, as `netslot --help` shows them. Keep in step with [`Kind::code`] and
/// the README.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  partial failure: the command ran, some slots or objects failed (see the report)
  2  usage: bad arguments or input refused before any change
  3  permission: not root, or the kernel said EPERM/EACCES
  4  kernel: a system call, netlink request or bpf call failed
  5  owned: a live process (up --hold, up, down, serve) owns the pool
  6  collision: what the pool would use was made by someone else (a device in its
     group, another pool's record or pins, a name taken); nothing was touched

With --json, every document on stdout has \"schema\": 1; an error is
{\"schema\": 1, \"error\": {\"kind\": \"usage\", \"code\": 2, \"message\": \"...\"}}.
Durations are integer microseconds in fields named *_us.";

/// What kind of failure a command ended in; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// Bad arguments or input, refused before any change.
    Usage,
    /// Not root, or the kernel refused for want of privilege (EPERM, EACCES).
    Permission,
    /// A system call, netlink request or bpf call failed.
    Kernel,
    /// A live process owns the pool.
    Owned,
    /// The pool would collide with what someone else made.
    Collision,
}

impl Kind {
    /// The process exit code of this kind.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Usage => 2,
            Self::Permission => 3,
            Self::Kernel => 4,
            Self::Owned => 5,
            Self::Collision => 6,
        }
    }

    /// `Permission` for EPERM/EACCES, else `Kernel`.
    pub(crate) fn of_io(e: &io::Error) -> Self {
        if e.kind() == io::ErrorKind::PermissionDenied {
            Self::Permission
        } else {
            Self::Kernel
        }
    }
}

/// A failed subcommand: what kind of failure, and the message a person reads.
#[derive(Debug)]
pub(crate) struct CliError {
    pub kind: Kind,
    pub message: String,
}

impl CliError {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    /// An OS error, with what was being done: `Permission` or `Kernel` by its errno.
    pub(crate) fn io(what: impl fmt::Display) -> impl FnOnce(io::Error) -> Self {
        move |e| Self::new(Kind::of_io(&e), format!("{what}: {e}"))
    }

    /// Prints the error (a JSON document on stdout under `--json`, else a line on stderr)
    /// and returns its exit code.
    pub(crate) fn report(&self, json: bool) -> ExitCode {
        if json {
            #[derive(Serialize)]
            struct Body<'a> {
                kind: Kind,
                code: u8,
                message: &'a str,
            }
            #[derive(Serialize)]
            struct Doc<'a> {
                error: Body<'a>,
            }
            crate::output::print_json(&Doc {
                error: Body {
                    kind: self.kind,
                    code: self.kind.code(),
                    message: &self.message,
                },
            });
        } else {
            eprintln!("netslot: {}", self.message);
        }
        ExitCode::from(self.kind.code())
    }
}

/// Whether the command line asks for JSON. Read from the raw arguments, so that an
/// argument clap refuses is reported as JSON too.
pub(crate) fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// Ends the process on a command line clap refused: clap's own text and exit code 2, or
/// under `--json` a usage error document (exit code 2 too). Help and version go through
/// clap unchanged.
pub(crate) fn usage_exit(e: clap::Error, json: bool) -> ! {
    use clap::error::ErrorKind as Clap;
    if !json || matches!(e.kind(), Clap::DisplayHelp | Clap::DisplayVersion) {
        e.exit();
    }
    let text = e.render().to_string();
    // The first paragraph: one line, or a heading and its indented list (e.g. the
    // required arguments that were not provided).
    let first = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = first.strip_prefix("error: ").unwrap_or(&first).to_owned();
    CliError::usage(message).report(true);
    std::process::exit(Kind::Usage.code().into());
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// For subcommands that still report plain text (`serve`): the message only.
impl From<CliError> for String {
    fn from(e: CliError) -> Self {
        e.message
    }
}

/// Errors of subcommands that still report plain text (`serve`): start-up failures
/// there are system calls (sockets, threads, the engine), hence `Kernel`.
impl From<String> for CliError {
    fn from(message: String) -> Self {
        Self::new(Kind::Kernel, message)
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::usage(e.to_string())
    }
}

impl From<RecordError> for CliError {
    fn from(e: RecordError) -> Self {
        Self::new(record_kind(&e), e.to_string())
    }
}

impl From<GcError> for CliError {
    fn from(e: GcError) -> Self {
        Self::new(gc_kind(&e), e.to_string())
    }
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        let kind = match &e {
            EngineError::Config(_) => Kind::Usage,
            EngineError::Io { source, .. } => Kind::of_io(source),
            EngineError::GroupInUse { .. }
            | EngineError::PoolInUse { .. }
            | EngineError::Taken { .. }
            | EngineError::NameTaken { .. } => Kind::Collision,
            EngineError::Claim(gc) => gc_kind(gc),
            EngineError::Bpf { source, .. } if source.permission_denied() => Kind::Permission,
            // Bpf, Leftovers, Protocol, and variants added later: the kernel refused.
            _ => Kind::Kernel,
        };
        Self::new(kind, e.to_string())
    }
}

fn record_kind(e: &RecordError) -> Kind {
    match e {
        RecordError::Owned { .. } => Kind::Owned,
        RecordError::Io { source, .. } => Kind::of_io(source),
    }
}

fn gc_kind(e: &GcError) -> Kind {
    match e {
        GcError::Record(r) => record_kind(r),
        GcError::Census(c) => Kind::of_io(&c.source),
        GcError::OtherPool { .. } | GcError::OtherDir { .. } => Kind::Collision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    fn record_io(errno: i32) -> RecordError {
        RecordError::Io {
            path: "/run/netslot/x.json".into(),
            what: "open".into(),
            source: os(errno),
        }
    }

    fn owned() -> RecordError {
        RecordError::Owned {
            group: 7,
            pid: Some(42),
            path: "/run/netslot/x.lock".into(),
        }
    }

    #[test]
    fn codes_are_distinct_and_match_the_help() {
        let kinds = [
            Kind::Usage,
            Kind::Permission,
            Kind::Kernel,
            Kind::Owned,
            Kind::Collision,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.code()).collect();
        codes.push(PARTIAL);
        codes.push(0);
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        for k in kinds {
            let name = serde_json::to_value(k).unwrap();
            let line = format!("  {}  {}:", k.code(), name.as_str().unwrap());
            assert!(EXIT_CODES_HELP.contains(&line), "help lacks {line:?}");
        }
    }

    #[test]
    fn library_errors_map_to_their_kind() {
        let cases: Vec<(CliError, Kind)> = vec![
            (ConfigError::NoSlots.into(), Kind::Usage),
            (
                EngineError::Config(ConfigError::GroupZero).into(),
                Kind::Usage,
            ),
            (owned().into(), Kind::Owned),
            (GcError::Record(owned()).into(), Kind::Owned),
            (
                EngineError::Claim(GcError::Record(owned())).into(),
                Kind::Owned,
            ),
            (record_io(libc::EACCES).into(), Kind::Permission),
            (
                GcError::Record(record_io(libc::EPERM)).into(),
                Kind::Permission,
            ),
            (GcError::Record(record_io(libc::EIO)).into(), Kind::Kernel),
            (
                EngineError::Claim(GcError::OtherPool {
                    group: 7,
                    theirs: "a".into(),
                    ours: "b".into(),
                    path: "p".into(),
                })
                .into(),
                Kind::Collision,
            ),
            (
                GcError::OtherDir {
                    prefix: "a".into(),
                    group: 7,
                    recorded: "/x".into(),
                    given: "/y".into(),
                }
                .into(),
                Kind::Collision,
            ),
            (
                EngineError::PoolInUse {
                    prefix: "ns".into(),
                    group: 7,
                    slots: 1,
                }
                .into(),
                Kind::Collision,
            ),
            (
                EngineError::GroupInUse {
                    group: 7,
                    count: 1,
                    first: "x".into(),
                }
                .into(),
                Kind::Collision,
            ),
            (
                EngineError::Taken { what: "x".into() }.into(),
                Kind::Collision,
            ),
            (
                EngineError::NameTaken {
                    id: 0,
                    name: "ns0".into(),
                    by: "a device".into(),
                }
                .into(),
                Kind::Collision,
            ),
            (
                EngineError::Io {
                    what: "socket".into(),
                    source: os(libc::EPERM),
                }
                .into(),
                Kind::Permission,
            ),
            (
                EngineError::Io {
                    what: "socket".into(),
                    source: os(libc::ENOBUFS),
                }
                .into(),
                Kind::Kernel,
            ),
            (EngineError::Protocol("x".into()).into(), Kind::Kernel),
            (
                EngineError::Leftovers {
                    group: 7,
                    errors: vec!["x".into()],
                }
                .into(),
                Kind::Kernel,
            ),
            (CliError::io("open")(os(libc::EACCES)), Kind::Permission),
            (CliError::io("open")(os(libc::ENOENT)), Kind::Kernel),
        ];
        for (got, want) in cases {
            assert_eq!(got.kind, want, "{got}");
        }
    }
}
