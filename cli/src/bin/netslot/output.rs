//! output: JSON printing (every document carries `"schema"`, see `error::SCHEMA`) and
//! the progress bar shared by the subcommands.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Prints `value`, a struct, as one JSON document on stdout, with `"schema"` first.
pub(crate) fn print_json<T: Serialize>(value: &T) {
    #[derive(Serialize)]
    struct Doc<'a, T> {
        schema: u32,
        #[serde(flatten)]
        body: &'a T,
    }
    let doc = Doc {
        schema: crate::error::SCHEMA,
        body: value,
    };
    match serde_json::to_string_pretty(&doc) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("netslot: cannot encode JSON: {e}"),
    }
}

/// A progress bar on stderr that appears only once the work has taken over a second.
pub(crate) struct Progress {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
}

impl Progress {
    pub fn new(total: usize, what: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        Self {
            bar,
            started: Instant::now(),
            shown: false,
        }
    }

    pub fn update(&mut self, done: usize) {
        if !self.shown && self.started.elapsed() > Duration::from_secs(1) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        self.bar.set_position(done as u64);
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
