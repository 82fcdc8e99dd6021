//! Placeholder until the checker branch lands (merge takes the other side).
use crate::workload::PodTemplate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Baseline,
    Restricted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub level: Level,
    pub container: Option<String>,
    pub field: String,
    pub detail: String,
}

pub fn check(_pod: &PodTemplate<'_>, _level: Level) -> Vec<Violation> {
    Vec::new()
}
