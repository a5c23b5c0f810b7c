//! hold_arg: the `--max-rtnl-hold` option shared by `up` and `serve`: milliseconds, or
//! `unbounded`, parsed into the library's `EngineConfig::max_rtnl_hold`.

/// `--max-rtnl-hold`: milliseconds, or no budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HoldBudgetArg(pub(crate) Option<std::time::Duration>);

pub(crate) fn parse_hold(s: &str) -> Result<HoldBudgetArg, String> {
    if s == "unbounded" {
        return Ok(HoldBudgetArg(None));
    }
    let ms: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is neither milliseconds nor `unbounded`"))?;
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(format!(
            "`{s}`: the budget must be a non-negative number of ms"
        ));
    }
    Ok(HoldBudgetArg(Some(std::time::Duration::from_secs_f64(
        ms / 1e3,
    ))))
}
