//! The integrity check behind `roost admin check`: every record of every tree is read and
//! decoded as its type, and every queue holds each message from its oldest to its last (an
//! acknowledgement removes a prefix, so a gap is a record lost). Each tree's owner module says
//! what its records are; this module only gathers the findings.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the check found; `problems` is empty for a sound store.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Per tree: records read, and how many of them could not be read or decoded.
    pub trees: BTreeMap<String, TreeCheck>,
    /// Each problem in a sentence (which tree, which key or queue).
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct TreeCheck {
    pub records: u64,
    pub damaged: u64,
}

impl CheckReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn record(&mut self, tree: &str) {
        self.trees.entry(tree.to_owned()).or_default().records += 1;
    }

    pub(crate) fn damaged(&mut self, tree: &str, what: String) {
        let entry = self.trees.entry(tree.to_owned()).or_default();
        entry.records += 1;
        entry.damaged += 1;
        // A thousand sentences say no more than the count.
        if self.problems.len() < 1000 {
            self.problems.push(format!("{tree}: {what}"));
        }
    }

    /// Counts every record of a tree whose values are not Roost-encoded (or are checked
    /// elsewhere), reporting those that cannot be read at all.
    pub(crate) fn readable(&mut self, name: &str, tree: &sled::Tree) {
        for entry in tree.iter() {
            match entry {
                Ok(_) => self.record(name),
                Err(e) => self.damaged(name, format!("unreadable record: {e}")),
            }
        }
    }
}
