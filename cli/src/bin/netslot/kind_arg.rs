//! kind_arg: the slot-kind options shared by `up` and `serve` (`--kind` and the `--tap-*`
//! options of microVM slots), built into the library's `EngineConfig::kind`.

use clap::{Args, ValueEnum};

use netslot::microvm::{SlotKind, TapConfig, DEFAULT_TAP_NAME};

use crate::error::CliError;

/// `--kind` and the tap options.
#[derive(Debug, Clone, Args)]
pub(crate) struct KindArgs {
    /// What every slot is: a standard slot, or a microVM slot, whose namespace also holds a
    /// tap for a VMM (Firecracker, Cloud Hypervisor, QEMU) to open.
    #[arg(long, value_enum, default_value_t = KindArg::Standard)]
    kind: KindArg,
    /// Name of the tap inside each slot's namespace: what the VMM opens (Firecracker's
    /// host_dev_name). Needs --kind microvm.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_TAP_NAME, requires = "kind")]
    tap_name: String,
    /// The uid that may open each tap without CAP_NET_ADMIN (TUNSETOWNER): an unprivileged
    /// VMM, such as Firecracker under its jailer, opens the tap by name as that uid. One
    /// RTNL acquisition per slot. Needs --kind microvm.
    #[arg(long, value_name = "UID", requires = "kind")]
    tap_uid: Option<u32>,
    /// The gid whose members may open each tap (TUNSETGROUP; either the uid or the gid
    /// matching lets a process in). One more RTNL acquisition per slot. Needs --kind
    /// microvm.
    #[arg(long, value_name = "GID", requires = "kind")]
    tap_gid: Option<u32>,
    /// Make multi-queue taps (IFF_MULTI_QUEUE). It must match what the VMM asks for when
    /// it opens the tap, or the kernel refuses the open (EINVAL); Firecracker asks for a
    /// single queue, so leave it off for Firecracker. Needs --kind microvm.
    #[arg(long, requires = "kind")]
    tap_multi_queue: bool,
}

/// `--kind`: the library's [`SlotKind`], with the help text `--help` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KindArg {
    /// A namespace with `lo` up, a veth pair (`eth0` inside), a /31 on each end and a
    /// default route in the slot.
    Standard,
    /// The standard slot plus a persistent tap (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR) in the
    /// slot's namespace. The guest behind the tap takes the slot's address, with the host
    /// end as its gateway; eth0 has no address, and an XDP program forwards frames
    /// between the tap and eth0. Needs the XDP counters on the host ends (the default;
    /// not with --no-xdp, nor with up's --attach tc-block).
    Microvm,
}

impl KindArgs {
    /// The library's slot kind. clap refuses a tap option without `--kind`; this refuses
    /// one with `--kind standard`.
    pub(crate) fn slot_kind(&self) -> Result<SlotKind, CliError> {
        match self.kind {
            KindArg::Microvm => Ok(SlotKind::Microvm(TapConfig {
                name: self.tap_name.clone(),
                owner: self.tap_uid,
                group: self.tap_gid,
                multi_queue: self.tap_multi_queue,
            })),
            KindArg::Standard => {
                let given = [
                    (self.tap_name != DEFAULT_TAP_NAME, "--tap-name"),
                    (self.tap_uid.is_some(), "--tap-uid"),
                    (self.tap_gid.is_some(), "--tap-gid"),
                    (self.tap_multi_queue, "--tap-multi-queue"),
                ];
                match given.iter().find(|(set, _)| *set) {
                    Some((_, option)) => Err(CliError::usage(format!(
                        "{option} applies to microVM slots only: add --kind microvm"
                    ))),
                    None => Ok(SlotKind::Standard),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        kind: KindArgs,
    }

    fn parse(args: &[&str]) -> Result<Result<SlotKind, CliError>, clap::Error> {
        Cmd::try_parse_from(std::iter::once("netslot").chain(args.iter().copied()))
            .map(|c| c.kind.slot_kind())
    }

    #[test]
    fn tap_options_build_the_microvm_kind_and_need_it() {
        assert_eq!(parse(&[]).unwrap().unwrap(), SlotKind::Standard);
        assert_eq!(
            parse(&["--kind", "microvm"]).unwrap().unwrap(),
            SlotKind::Microvm(TapConfig::default())
        );
        assert_eq!(
            parse(&[
                "--kind",
                "microvm",
                "--tap-name",
                "vmtap",
                "--tap-uid",
                "1000",
                "--tap-gid",
                "1001",
                "--tap-multi-queue",
            ])
            .unwrap()
            .unwrap(),
            SlotKind::Microvm(TapConfig {
                name: "vmtap".into(),
                owner: Some(1000),
                group: Some(1001),
                multi_queue: true,
            })
        );
        // Without --kind: clap's own refusal names the missing option.
        for option in [
            &["--tap-uid", "1000"][..],
            &["--tap-gid", "1000"],
            &["--tap-name", "x"],
            &["--tap-multi-queue"],
        ] {
            let e = parse(option).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert!(e.to_string().contains("--kind"), "{e}");
        }
        // With --kind standard: refused by slot_kind.
        let e = parse(&["--kind", "standard", "--tap-uid", "1000"])
            .unwrap()
            .unwrap_err();
        assert!(
            e.message
                .contains("--tap-uid applies to microVM slots only"),
            "{}",
            e.message
        );
    }
}
