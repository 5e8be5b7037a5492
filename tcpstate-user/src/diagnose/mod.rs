//! Diagnosis, pure: the [`evidence`] a run or a [`recording`] gathers, and
//! the [`findings`] drawn from it (what is wrong, where, why, what to do).

pub mod evidence;
pub mod findings;
pub mod recording;
