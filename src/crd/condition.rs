//! The standard condition type shared by the three resources, and the one place
//! that stamps `lastTransitionTime` (it changes only when the status changes).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of a condition.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

/// A condition following the Kubernetes API conventions (and kstatus).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition (`Ready`, `Provisioned`, `Reconciling`, `Stalled`, …).
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds: True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable reason for the last transition, UpperCamelCase.
    pub reason: String,
    /// Human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A new condition stamped with the current time.
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
    ) -> Self {
        Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: now_rfc3339(),
            observed_generation,
        }
    }
}

/// The current time as kube-apiserver writes it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

/// Inserts or updates `new` in `conditions`, keeping the old `lastTransitionTime`
/// when the status did not change. Returns true when anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            if *old == new {
                return false;
            }
            *old = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// The schema attribute for a condition list: a map keyed by `type`.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = generator.subschema_for::<Condition>();
    schemars::json_schema!({
        "description": "Standard conditions, one per type.",
        "type": "array",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut list = vec![];
        let mut first = Condition::new("Ready", ConditionStatus::False, "Waiting", "x", Some(1));
        first.last_transition_time = "2020-01-01T00:00:00Z".into();
        assert!(set_condition(&mut list, first));
        let second = Condition::new("Ready", ConditionStatus::False, "Failed", "y", Some(2));
        assert!(set_condition(&mut list, second));
        assert_eq!(list[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(list[0].reason, "Failed");
        let same = list[0].clone();
        assert!(!set_condition(&mut list, same));
        let flipped = Condition::new("Ready", ConditionStatus::True, "Provisioned", "", Some(2));
        assert!(set_condition(&mut list, flipped));
        assert_ne!(list[0].last_transition_time, "2020-01-01T00:00:00Z");
    }
}
