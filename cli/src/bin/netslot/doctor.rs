//! doctor: prints the host's kernel-state limits that N slots run into, each with its
//! verdict and fix, as `netslot::doctor` reads and judges them. Changes nothing.

use std::process::ExitCode;

use clap::Args;
use netslot::doctor::{self, Check, Verdict};
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// How many slots to check the limits for.
    #[arg(long)]
    slots: u64,
    /// Print JSON on stdout instead of text:
    /// {"schema":1,"slots":N,"checks":[{"name","value","needed","verdict","breaks","fix"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    schema: u32,
    slots: u64,
    checks: &'a [Check],
}

pub(crate) fn run(args: DoctorArgs) -> Result<ExitCode, String> {
    let checks = doctor::judge(&doctor::Readings::read(), args.slots);
    if args.json {
        crate::output::print_json(&Report {
            schema: 1,
            slots: args.slots,
            checks: &checks,
        });
    } else {
        print_text(&checks, args.slots);
    }
    Ok(if doctor::any_problem(&checks) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_text(checks: &[Check], slots: u64) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let head = format!(
            "{:<4}  {:<width$}  {} (needed for {slots} slots: {})",
            c.verdict.as_str(),
            c.name,
            show(&c.value),
            show(&c.needed),
        );
        if c.verdict == Verdict::Ok {
            println!("{head}");
        } else {
            println!("{head}: {}", c.breaks);
            if let Some(fix) = &c.fix {
                println!("{:<4}  {:<width$}  fix: {fix}", "", "");
            }
        }
    }
    let bad = checks.iter().filter(|c| c.verdict != Verdict::Ok).count();
    if bad == 0 {
        println!("all {} checks ok for {slots} slots", checks.len());
    } else {
        println!("{bad} of {} checks not ok for {slots} slots", checks.len());
    }
}
