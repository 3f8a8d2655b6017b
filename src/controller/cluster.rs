//! The Cluster controller: a summary of its Servers in status (total, ready,
//! and the kstatus conditions: `Ready` when all are, `Stalled` when any is,
//! `Reconciling` while some are on their way). The summary is a pure
//! function of the Cluster and the Servers.

use kube::{Resource, ResourceExt};

use super::conditions::{READY, STALLED, mark_settled, mark_unsettled, reason};
use crate::crd::{Cluster, ClusterStatus, Condition, ConditionStatus, Server, set_condition};

/// The status `cluster` should have given `servers` (any Servers; those of other
/// clusters or namespaces are ignored). Keeps `lastTransitionTime` of unchanged
/// conditions from `cluster`'s current status.
pub fn summarize(cluster: &Cluster, servers: &[Server]) -> ClusterStatus {
    let name = cluster.name_any();
    let members: Vec<&Server> = servers
        .iter()
        .filter(|s| s.namespace() == cluster.namespace() && s.spec.cluster_ref.name == name)
        .collect();
    let is_true = |s: &Server, type_: &str| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
        })
    };
    let is_ready = |s: &Server| is_true(s, READY);
    let stalled: Vec<String> = members
        .iter()
        .filter(|s| is_true(s, STALLED))
        .map(|s| s.name_any())
        .collect();
    let ready = members.iter().filter(|s| is_ready(s)).count();
    let not_ready: Vec<String> = members
        .iter()
        .filter(|s| !is_ready(s))
        .map(|s| s.name_any())
        .collect();
    let generation = cluster.meta().generation;
    let condition = if not_ready.is_empty() {
        Condition::new(
            READY,
            ConditionStatus::True,
            reason::ALL_SERVERS_READY,
            format!("{} of {} Servers ready", ready, members.len()),
            generation,
        )
    } else {
        Condition::new(
            READY,
            ConditionStatus::False,
            reason::SERVERS_NOT_READY,
            format!(
                "{} of {} Servers ready; not ready: {}",
                ready,
                members.len(),
                listed(&not_ready)
            ),
            generation,
        )
    };
    let ready_message = condition.message.clone();
    let mut status = cluster.status.clone().unwrap_or_default();
    set_condition(&mut status.conditions, condition);
    if !stalled.is_empty() {
        let message = format!("stalled: {}", listed(&stalled));
        let why = (reason::SERVERS_STALLED, message);
        mark_unsettled(&mut status.conditions, true, why.clone(), why, generation);
    } else if not_ready.is_empty() {
        mark_settled(&mut status.conditions, generation);
    } else {
        let why = (reason::SERVERS_NOT_READY, ready_message);
        mark_unsettled(&mut status.conditions, false, why.clone(), why, generation);
    }
    status.observed_generation = generation;
    status.servers_total = u32::try_from(members.len()).unwrap_or(u32::MAX);
    status.servers_ready = u32::try_from(ready).unwrap_or(u32::MAX);
    status
}

/// Up to ten names, comma-separated, then "…".
fn listed(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        out.push_str(", …");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions::RECONCILING;
    use crate::crd::{ClusterSpec, LocalObjectReference, ServerSpec, ServerStatus};

    fn server(name: &str, cluster: &str, ready: Option<bool>) -> Server {
        let mut s = Server::new(
            name,
            ServerSpec {
                cluster_ref: LocalObjectReference {
                    name: cluster.into(),
                },
                host: "10.0.0.1".into(),
                provisioning: Default::default(),
                ssh: None,
                roles: vec![crate::crd::Role::Agent],
                images: Default::default(),
                parameters: Default::default(),
                suspend: false,
                layout: None,
            },
        );
        s.metadata.namespace = Some("ns".into());
        s.status = ready.map(|r| ServerStatus {
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
        s
    }

    #[test]
    fn counts_members_and_names_the_unready() {
        let mut c = Cluster::new("lab", ClusterSpec::default());
        c.metadata.namespace = Some("ns".into());
        c.metadata.generation = Some(3);
        let servers = [
            server("a", "lab", Some(true)),
            server("b", "lab", Some(false)),
            server("c", "lab", None),
            server("d", "other", Some(true)),
        ];
        let st = summarize(&c, &servers);
        assert_eq!((st.servers_total, st.servers_ready), (3, 1));
        assert_eq!(st.observed_generation, Some(3));
        let ready = &st.conditions[0];
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(ready.message, "1 of 3 Servers ready; not ready: b, c");

        let cond = |st: &ClusterStatus, t: &str| {
            st.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.status)
        };
        assert_eq!(cond(&st, RECONCILING), Some(ConditionStatus::True));
        assert_eq!(cond(&st, STALLED), Some(ConditionStatus::False));

        // A stalled Server stalls the Cluster (kstatus: Failed, not InProgress).
        let mut stuck = servers.clone();
        stuck[1]
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(Condition::new(
                STALLED,
                ConditionStatus::True,
                "X",
                "",
                None,
            ));
        let st = summarize(&c, &stuck);
        assert_eq!(cond(&st, STALLED), Some(ConditionStatus::True));
        assert_eq!(cond(&st, RECONCILING), Some(ConditionStatus::False));
        assert!(st.conditions.iter().any(|c| c.message == "stalled: b"));

        let st = summarize(&c, &servers[..1]);
        assert_eq!(cond(&st, READY), Some(ConditionStatus::True));
        assert_eq!(cond(&st, RECONCILING), Some(ConditionStatus::False));
        assert_eq!(cond(&st, STALLED), Some(ConditionStatus::False));
        // Recomputing from a status that already holds the result changes nothing.
        c.status = Some(st.clone());
        assert_eq!(summarize(&c, &servers[..1]), st);
    }
}
