//! groups: the device groups a pool owns in the host namespace, one per sub-batch.
//!
//! A group change (rtnl_group_changelink) acts on every device of its group under one
//! RTNL acquisition, so the hold grows with the group. To keep each hold under the
//! budget (see `hold`), a pool's host ends are split into sub-batches, each in a group of
//! its own, brought up by its own group change. A pool is still named by one group, its
//! base `g` (1..=65535): it owns the groups `g + k * 65536` for k = 0..65535, i.e. every
//! group whose low 16 bits are `g`. Sub-batch 0 is `g` itself, so a pool made by one
//! small call looks exactly like a pool of one group, and two pools with different bases
//! never share a group.

/// Distance between two sub-batch groups of one pool.
pub const GROUP_STRIDE: u32 = 1 << 16;
/// Largest base group a pool can have.
pub const MAX_BASE_GROUP: u32 = GROUP_STRIDE - 1;

/// Group of sub-batch `k` of the pool with base group `base`.
pub fn sub_batch_group(base: u32, k: u16) -> u32 {
    base + u32::from(k) * GROUP_STRIDE
}

/// Whether device group `group` belongs to the pool with base group `base`.
pub fn owns(base: u32, group: u32) -> bool {
    group != 0 && group % GROUP_STRIDE == base
}

/// The distinct groups of `base`'s pool among `groups`, in ascending order.
pub fn owned_groups(base: u32, groups: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let set: std::collections::BTreeSet<u32> =
        groups.into_iter().filter(|&g| owns(base, g)).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_batches_stay_in_their_pool() {
        assert_eq!(sub_batch_group(7600, 0), 7600);
        assert_eq!(sub_batch_group(7600, 3), 7600 + 3 * 65536);
        assert_eq!(sub_batch_group(MAX_BASE_GROUP, u16::MAX), u32::MAX);
        for k in [0, 1, 200, u16::MAX] {
            assert!(owns(7600, sub_batch_group(7600, k)));
            assert!(!owns(7601, sub_batch_group(7600, k)));
        }
        assert!(!owns(7600, 0));
        assert!(!owns(7600, 7599));
    }

    #[test]
    fn owned_groups_are_distinct_and_sorted() {
        let g = [7600 + 65536, 7600, 1, 7600 + 65536, 0, 7601];
        assert_eq!(owned_groups(7600, g), vec![7600, 7600 + 65536]);
    }
}
