//! The Cluster controller's summary: its Servers (total, Ready, updated),
//! where the rollout stands per role (from the rollout planner), and the
//! kstatus conditions — `Ready` when every managed Server runs its desired
//! configuration and is Ready, `Reconciling` while a rollout is in progress,
//! `Stalled` when it is paused by failures or a Server is stalled. Pure
//! functions of the Cluster, its Servers' statuses and the plan; Events name
//! the rollout's transitions.

use std::sync::Arc;

use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::conditions::{READY, STALLED, mark_settled, mark_unsettled, reason};
use super::server::rollout::{Plan, listed};
use crate::crd::{
    Cluster, ClusterStatus, Condition, ConditionStatus, Image, RolloutPhase, RolloutStatus, Server,
    ServerStatus, set_condition,
};

/// Short hash of the cluster-wide desired configuration: parameters,
/// images (with the digests pushed), registry and rollout order.
pub fn revision(cluster: &Cluster, images: &Store<Image>) -> String {
    let ns = cluster.namespace().unwrap_or_default();
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&cluster.spec.parameters).unwrap_or_default());
    h.update(serde_json::to_vec(&cluster.spec.registry).unwrap_or_default());
    for (role, name) in &cluster.spec.images {
        let digest = images
            .get(&ObjectRef::new(name).within(&ns))
            .and_then(|i| i.status.as_ref().and_then(|s| s.digest.clone()))
            .unwrap_or_default();
        h.update(format!("\0{role}\0{name}\0{digest}").as_bytes());
    }
    hex::encode(&h.finalize()[..5])
}

/// The status `cluster` should have, given its members (with their newest
/// statuses) and the rollout plan. Keeps `lastTransitionTime` of unchanged
/// conditions from `cluster`'s current status.
pub fn summarize(
    cluster: &Cluster,
    members: &[(Arc<Server>, Option<ServerStatus>)],
    plan: &Plan,
    revision: String,
) -> ClusterStatus {
    let is_true = |st: &Option<ServerStatus>, type_: &str| {
        st.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
        })
    };
    let stalled: Vec<String> = members
        .iter()
        .filter(|(_, st)| is_true(st, STALLED))
        .map(|(s, _)| s.name_any())
        .collect();
    let ready = members.iter().filter(|(_, st)| is_true(st, READY)).count();
    let not_ready: Vec<String> = members
        .iter()
        .filter(|(_, st)| !is_true(st, READY))
        .map(|(s, _)| s.name_any())
        .collect();
    let summary = &plan.summary;
    let generation = cluster.meta().generation;
    let ready_message = format!(
        "{ready} of {} Servers ready{}",
        members.len(),
        if not_ready.is_empty() {
            String::new()
        } else {
            format!("; not ready: {}", listed(&not_ready))
        }
    );
    let mut status = cluster.status.clone().unwrap_or_default();
    // The Cluster's own parameters, judged for every role they would reach:
    // wrong with or without a Server.
    let invalid = crate::config::validate_cluster_parameters(crate::config::ClusterInput {
        name: &cluster.name_any(),
        spec: &cluster.spec,
    })
    .err()
    .map(|e| format!("spec.parameters: {e}"));
    let complete =
        invalid.is_none() && not_ready.is_empty() && summary.phase == RolloutPhase::Complete;
    set_condition(
        &mut status.conditions,
        if complete {
            Condition::new(
                READY,
                ConditionStatus::True,
                reason::ALL_SERVERS_READY,
                ready_message.clone(),
                generation,
            )
        } else if let Some(message) = &invalid {
            Condition::new(
                READY,
                ConditionStatus::False,
                reason::INVALID_PARAMETERS,
                message.clone(),
                generation,
            )
        } else if summary.phase == RolloutPhase::Paused {
            Condition::new(
                READY,
                ConditionStatus::False,
                reason::ROLLOUT_PAUSED,
                format!("{ready_message}; {}", paused_message(&summary.failed)),
                generation,
            )
        } else {
            Condition::new(
                READY,
                ConditionStatus::False,
                reason::SERVERS_NOT_READY,
                ready_message.clone(),
                generation,
            )
        },
    );
    if let Some(message) = invalid {
        let why = (reason::INVALID_PARAMETERS, message);
        mark_unsettled(&mut status.conditions, true, why.clone(), why, generation);
    } else if summary.phase == RolloutPhase::Paused {
        let why = (reason::ROLLOUT_PAUSED, paused_message(&summary.failed));
        mark_unsettled(&mut status.conditions, true, why.clone(), why, generation);
    } else if !stalled.is_empty() {
        let why = (
            reason::SERVERS_STALLED,
            format!("stalled: {}", listed(&stalled)),
        );
        mark_unsettled(&mut status.conditions, true, why.clone(), why, generation);
    } else if complete {
        mark_settled(&mut status.conditions, generation);
    } else {
        let why = match (summary.phase, summary.current_role) {
            (RolloutPhase::Updating, Some(role)) => (
                reason::ROLLING_OUT,
                format!("rolling out revision {revision}: updating role {role}"),
            ),
            (RolloutPhase::Held, _) => (
                reason::ROLLOUT_HELD,
                "updates are held (spec.rollout.paused)".to_string(),
            ),
            _ => (reason::SERVERS_NOT_READY, ready_message),
        };
        mark_unsettled(&mut status.conditions, false, why.clone(), why, generation);
    }
    status.observed_generation = generation;
    status.servers_total = count(members.len());
    status.servers_ready = count(ready);
    status.servers_updated = count(summary.updated);
    status.rollout = Some(RolloutStatus {
        revision,
        phase: summary.phase,
        current_role: summary.current_role.map(|r| r.to_string()),
        roles: summary.roles.clone(),
        failed_servers: summary.failed.clone(),
    });
    status
}

fn paused_message(failed: &[String]) -> String {
    format!(
        "rollout paused after failed updates of {}: fix them (a new generation of the Cluster or of those Servers) or annotate them with servermanager.contrail.io/retry",
        listed(failed)
    )
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Events for what changed in the rollout between two statuses: started,
/// moved to the next role, paused, held, completed.
pub fn transitions(
    old: Option<&ClusterStatus>,
    new: &ClusterStatus,
) -> Vec<(EventType, &'static str, String)> {
    let Some(now) = new.rollout.as_ref() else {
        return Vec::new();
    };
    let before = old.and_then(|o| o.rollout.as_ref());
    let phase = before.map(|b| b.phase);
    let mut out = Vec::new();
    if phase != Some(now.phase) {
        match now.phase {
            RolloutPhase::Updating => out.push((
                EventType::Normal,
                reason::ROLLOUT_STARTED,
                format!("rolling out revision {}", now.revision),
            )),
            RolloutPhase::Paused => out.push((
                EventType::Warning,
                reason::ROLLOUT_PAUSED,
                paused_message(&now.failed_servers),
            )),
            RolloutPhase::Held => out.push((
                EventType::Normal,
                reason::ROLLOUT_HELD,
                "updates are held (spec.rollout.paused)".to_string(),
            )),
            RolloutPhase::Complete if phase.is_some() => out.push((
                EventType::Normal,
                reason::ROLLOUT_COMPLETE,
                format!(
                    "revision {}: every Server runs its desired configuration",
                    now.revision
                ),
            )),
            RolloutPhase::Complete | RolloutPhase::Installing => {}
        }
    }
    if now.phase == RolloutPhase::Updating
        && let Some(role) = &now.current_role
        && before.and_then(|b| b.current_role.as_ref()) != Some(role)
    {
        let n = now
            .roles
            .iter()
            .find(|r| r.role.as_str() == role)
            .map(|r| r.total - r.updated)
            .unwrap_or(0);
        out.push((
            EventType::Normal,
            reason::ROLLOUT_ROLE_STARTED,
            format!("updating role {role}: {n} Server(s) to update"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions::RECONCILING;
    use crate::controller::server::rollout::{MemberState, plan};
    use crate::crd::{ClusterSpec, LocalObjectReference, Role, RolloutSpec, ServerSpec};

    fn server(name: &str, ready: Option<bool>) -> (Arc<Server>, Option<ServerStatus>) {
        let mut s = Server::new(
            name,
            ServerSpec {
                cluster_ref: LocalObjectReference { name: "lab".into() },
                host: "10.0.0.1".into(),
                provisioning: Default::default(),
                ssh: None,
                roles: vec![Role::Agent],
                images: Default::default(),
                parameters: Default::default(),
                suspend: false,
                layout: None,
            },
        );
        s.metadata.namespace = Some("ns".into());
        let st = ready.map(|r| ServerStatus {
            conditions: vec![Condition::new(
                READY,
                if r {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                },
                "X",
                "",
                None,
            )],
            ..Default::default()
        });
        (Arc::new(s), st)
    }

    fn member(name: &str, flags: &str) -> MemberState {
        let cur = flags.contains("cur");
        MemberState {
            name: name.into(),
            roles: vec![Role::Agent],
            managed: true,
            provisioned: true,
            desired: Some("h2".into()),
            applied: Some(if cur { "h2" } else { "h1" }.into()),
            available: true,
            failed: flags.contains("failed"),
            ..Default::default()
        }
    }

    fn cond(st: &ClusterStatus, t: &str) -> Option<ConditionStatus> {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status)
    }

    #[test]
    fn counts_members_and_follows_the_rollout() {
        let mut c = Cluster::new("lab", ClusterSpec::default());
        c.metadata.namespace = Some("ns".into());
        c.metadata.generation = Some(3);
        let members = [
            server("a", Some(true)),
            server("b", Some(false)),
            server("c", None),
        ];
        let p = plan(
            &RolloutSpec::default(),
            &[member("a", "cur"), member("b", ""), member("c", "")],
        );
        let st = summarize(&c, &members, &p, "abc".into());
        assert_eq!(
            (st.servers_total, st.servers_ready, st.servers_updated),
            (3, 1, 1)
        );
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!(cond(&st, READY), Some(ConditionStatus::False));
        assert_eq!(cond(&st, RECONCILING), Some(ConditionStatus::True));
        assert_eq!(cond(&st, STALLED), Some(ConditionStatus::False));
        let rollout = st.rollout.clone().unwrap();
        assert_eq!(rollout.phase, RolloutPhase::Updating);
        assert_eq!(rollout.current_role.as_deref(), Some("agent"));
        assert_eq!(rollout.roles[0].total, 3);

        // Events: started, then the role.
        let ev = transitions(None, &st);
        let reasons: Vec<&str> = ev.iter().map(|e| e.1).collect();
        assert_eq!(
            reasons,
            [reason::ROLLOUT_STARTED, reason::ROLLOUT_ROLE_STARTED]
        );
        // Recomputing from a status that holds the result changes nothing.
        c.status = Some(st.clone());
        assert_eq!(summarize(&c, &members, &p, "abc".into()), st);
        assert!(transitions(Some(&st), &st).is_empty());

        // A failure pauses it: Stalled, RolloutPaused.
        let p = plan(
            &RolloutSpec::default(),
            &[member("a", "cur failed"), member("b", ""), member("c", "")],
        );
        let paused = summarize(&c, &members, &p, "abc".into());
        assert_eq!(cond(&paused, STALLED), Some(ConditionStatus::True));
        assert_eq!(paused.rollout.as_ref().unwrap().phase, RolloutPhase::Paused);
        assert!(
            paused
                .conditions
                .iter()
                .any(|c| c.reason == reason::ROLLOUT_PAUSED && c.message.contains('a'))
        );
        let ev = transitions(Some(&st), &paused);
        assert_eq!(ev[0].1, reason::ROLLOUT_PAUSED);

        // A Cluster whose own parameters are wrong says so, with no Server.
        let mut bad = c.clone();
        bad.status = None;
        bad.spec.parameters = serde_json::from_value(serde_json::json!({
            "GLOBAL": {"xmpp_auth_enable": "maybe"}
        }))
        .unwrap();
        let invalid = summarize(&bad, &[], &plan(&RolloutSpec::default(), &[]), "abc".into());
        assert_eq!(cond(&invalid, READY), Some(ConditionStatus::False));
        assert_eq!(cond(&invalid, STALLED), Some(ConditionStatus::True));
        let ready = invalid
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap();
        assert_eq!(ready.reason, reason::INVALID_PARAMETERS);
        assert!(
            ready.message.contains("xmpp_auth_enable"),
            "{}",
            ready.message
        );

        // Complete.
        let all = [server("a", Some(true)), server("b", Some(true))];
        let p = plan(
            &RolloutSpec::default(),
            &[member("a", "cur"), member("b", "cur")],
        );
        let done = summarize(&c, &all, &p, "abc".into());
        assert_eq!(cond(&done, READY), Some(ConditionStatus::True));
        assert_eq!(cond(&done, RECONCILING), Some(ConditionStatus::False));
        let ev = transitions(Some(&st), &done);
        assert_eq!(ev[0].1, reason::ROLLOUT_COMPLETE);
    }
}
