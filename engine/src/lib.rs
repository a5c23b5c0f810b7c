//! netslot
