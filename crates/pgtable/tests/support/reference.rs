//! The plain reference model the property tests compare against: what each
//! page of the input space should translate to, kept as runs of pages.
#![allow(dead_code)]

use std::collections::BTreeMap;

use warden_pgtable::{Annotation, Attrs, Perms};

/// What one run of pages holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Mapped: page `ia` translates to `oa_base + (ia - run start)`.
    Mapped { oa_base: u64, attrs: Attrs, af: bool },
    /// Annotated.
    Annotated(Annotation),
}

/// Runs keyed by start address; value is (end, content). Unlisted pages are
/// empty.
#[derive(Default, Clone, Debug)]
pub struct Reference {
    runs: BTreeMap<u64, (u64, Content)>,
}

impl Reference {
    /// What `ia` holds, as (run start, content).
    pub fn get(&self, ia: u64) -> Option<(u64, Content)> {
        let (&start, &(end, c)) = self.runs.range(..=ia).next_back()?;
        (ia < end).then_some((start, c))
    }

    /// Expected output address of `ia`, if mapped.
    pub fn translate(&self, ia: u64) -> Option<(u64, Attrs, bool)> {
        match self.get(ia)? {
            (start, Content::Mapped { oa_base, attrs, af }) => Some((oa_base + (ia - start), attrs, af)),
            _ => None,
        }
    }

    /// Remove everything in [start, end), trimming runs that overlap.
    pub fn clear(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .runs
            .range(..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let (e, c) = self.runs.remove(&s).unwrap();
            if s < start {
                self.runs.insert(s, (start, c));
            }
            if e > end {
                let c2 = match c {
                    Content::Mapped { oa_base, attrs, af } => Content::Mapped {
                        oa_base: oa_base + (end - s),
                        attrs,
                        af,
                    },
                    a => a,
                };
                self.runs.insert(end, (e, c2));
            }
        }
    }

    /// Set [start, end) to `c`.
    pub fn set(&mut self, start: u64, end: u64, c: Content) {
        self.clear(start, end);
        self.runs.insert(start, (end, c));
    }

    /// Whether any page in [start, end) is annotated.
    pub fn any_annotated(&self, start: u64, end: u64) -> bool {
        self.runs
            .range(..end)
            .any(|(_, (e, c))| *e > start && matches!(c, Content::Annotated(_)))
    }

    /// Bytes mapped in [start, end).
    pub fn mapped_bytes(&self, start: u64, end: u64) -> u64 {
        self.runs
            .range(..end)
            .filter(|(_, (e, c))| *e > start && matches!(c, Content::Mapped { .. }))
            .map(|(s, (e, _))| e.min(&end) - s.max(&start))
            .sum()
    }

    /// Whether any mapped page in [start, end) has the access flag.
    pub fn any_young(&self, start: u64, end: u64) -> bool {
        self.runs
            .range(..end)
            .any(|(_, (e, c))| *e > start && matches!(c, Content::Mapped { af: true, .. }))
    }

    /// Change the mapped runs in [start, end) with `f`.
    pub fn update(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut Attrs, &mut bool)) {
        let pieces: Vec<(u64, u64, Content)> = self
            .runs
            .range(..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(s, (e, c))| (*s, *e, *c))
            .collect();
        for (s, e, c) in pieces {
            if let Content::Mapped {
                oa_base,
                mut attrs,
                mut af,
            } = c
            {
                let (ns, ne) = (s.max(start), e.min(end));
                f(&mut attrs, &mut af);
                self.set(
                    ns,
                    ne,
                    Content::Mapped {
                        oa_base: oa_base + (ns - s),
                        attrs,
                        af,
                    },
                );
            }
        }
    }

    /// Run boundaries (for sampling).
    pub fn boundaries(&self) -> Vec<u64> {
        self.runs.iter().flat_map(|(s, (e, _))| [*s, *e]).collect()
    }
}

/// Permissions after relaxing `p` by `extra`.
pub fn relaxed(p: Perms, extra: Perms) -> Perms {
    p.union(extra)
}
