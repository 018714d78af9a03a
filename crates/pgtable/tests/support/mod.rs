//! Test support: the model glue lives in `warden_pgtable::testutil::model`
//! (shared with the ownership crate's tests); the reference model of
//! translations is here.
#![allow(dead_code, unused_imports)]

pub mod reference;

pub use warden_pgtable::testutil::model::*;
