//! kallsyms: the kernel symbol table from `/proc/kallsyms` and function ranges.
//! Text symbols only matter here; module symbols (`[mod]`) are kept but unused.

use std::fs;

use super::error::CounterError;

const PATH: &str = "/proc/kallsyms";

/// A sorted copy of `/proc/kallsyms`.
#[derive(Debug, Clone)]
pub(crate) struct Kallsyms {
    /// (address, type letter, name), sorted by address.
    syms: Vec<(u64, char, String)>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`; fails when addresses are hidden.
    pub(crate) fn load() -> Result<Self, CounterError> {
        let text =
            fs::read_to_string(PATH).map_err(|source| CounterError::Read { path: PATH, source })?;
        let k = Self::parse(&text);
        if k.syms.iter().all(|s| s.0 == 0) {
            return Err(CounterError::AddressesHidden);
        }
        Ok(k)
    }

    /// Parses kallsyms text (`addr type name [module]` per line).
    pub(crate) fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, char, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?.chars().next()?;
                let name = it.next()?.to_string();
                Some((addr, ty, name))
            })
            .collect();
        syms.sort_by_key(|s| s.0);
        Self { syms }
    }

    /// The address of the first symbol called exactly `name`.
    pub(crate) fn addr(&self, name: &'static str) -> Result<u64, CounterError> {
        self.syms
            .iter()
            .find(|s| s.2 == name)
            .map(|s| s.0)
            .ok_or(CounterError::MissingSymbol(name))
    }

    /// `[start, end)` of every function whose name is `name` or `name.<suffix>`
    /// (compiler clones such as `.isra.0`); the end is the next higher symbol.
    pub(crate) fn ranges(&self, name: &str) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (i, s) in self.syms.iter().enumerate() {
            let matches =
                s.2 == name || (s.2.starts_with(name) && s.2[name.len()..].starts_with('.'));
            if !matches || !matches!(s.1, 't' | 'T') {
                continue;
            }
            if let Some(next) = self.syms[i + 1..].iter().find(|n| n.0 > s.0) {
                out.push((s.0, next.0));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff821fca30 t __pfx___mutex_unlock_slowpath.isra.0
ffffffff821fca40 t __mutex_unlock_slowpath.isra.0
ffffffff821fcc20 T __pfx_mutex_unlock
ffffffff821fcc30 T mutex_unlock
ffffffff821fcc60 T __pfx_ww_mutex_unlock
ffffffff821fcc70 T ww_mutex_unlock
";

    #[test]
    fn ranges_end_at_next_symbol_and_accept_clones() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(
            k.ranges("mutex_unlock"),
            vec![(0xffffffff821fcc30, 0xffffffff821fcc60)]
        );
        assert_eq!(
            k.ranges("__mutex_unlock_slowpath"),
            vec![(0xffffffff821fca40, 0xffffffff821fcc20)]
        );
        assert_eq!(k.addr("ww_mutex_unlock").unwrap(), 0xffffffff821fcc70);
        assert!(k.addr("rtnl_lock").is_err());
    }
}
