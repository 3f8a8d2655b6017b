//! The rollout planner: which Servers of a cluster may start a provisioning
//! run now, and why the others wait — one pure function of the Cluster's
//! rollout policy and its members' state as the caches hold it. The Server
//! controller asks it for one Server's decision; the Cluster controller
//! reports its summary.
//!
//! - A Server never provisioned is **installed** at once: nothing can become
//!   unavailable, so no budget applies (only the runners' capacity limits
//!   installs), and it does not count against the update budgets.
//! - A provisioned Server whose desired hash changed is **updated**: roles in
//!   `order` (a Server goes with its earliest role; roles not listed come
//!   last, together) — a Server starts only when every Server holding a role
//!   before its own is updated and available; and per role at most
//!   `maxUnavailable` provisioned Servers updating, unavailable or being
//!   deleted at once (a Server with several roles counts in each).
//! - `maxFailures` failed updates pause the rollout: no update starts until
//!   they stop counting (a new generation of the Cluster or of the Server, a
//!   new desired hash, the retry annotation). `paused: true` holds every
//!   update. Installs and deletions go on in both cases.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{Role, RoleRolloutStatus, RolloutPhase, RolloutSpec};

/// What the planner needs to know about one member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberState {
    /// Server name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Provisioned by the operator (not External).
    pub managed: bool,
    /// Being deleted (its deprovision counts as unavailability).
    pub deleting: bool,
    /// `spec.suspend`: it neither updates nor holds others back.
    pub suspended: bool,
    /// Provisioned successfully at least once.
    pub provisioned: bool,
    /// Its desired hash; `None` when it cannot be computed (blocked).
    pub desired: Option<String>,
    /// The hash last applied successfully.
    pub applied: Option<String>,
    /// Its containers are available (whatever their configuration).
    pub available: bool,
    /// A provision run is in flight (or was just started).
    pub in_flight: bool,
    /// An update started and has neither become available nor failed.
    pub updating: bool,
    /// Its update failed and counts towards `maxFailures`.
    pub failed: bool,
}

impl MemberState {
    fn updated(&self) -> bool {
        self.provisioned && self.desired.is_some() && self.desired == self.applied
    }

    fn done(&self) -> bool {
        self.updated() && self.available && !self.in_flight
    }

    fn needs_update(&self) -> bool {
        self.provisioned && self.desired.is_some() && self.desired != self.applied
    }

    fn unavailable(&self) -> bool {
        self.deleting || (self.provisioned && (self.in_flight || !self.available))
    }
}

/// Why a Server waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The role's disruption budget is used up.
    Budget {
        /// The role whose budget is full.
        role: Role,
        /// Its budget.
        max: usize,
        /// The Servers using it.
        busy: Vec<String>,
    },
    /// Servers of an earlier role are not all updated and available yet.
    Order {
        /// The earliest such role.
        role: Role,
        /// Those Servers.
        pending: Vec<String>,
    },
    /// Paused after `maxFailures` failed updates.
    Paused {
        /// The failed Servers.
        failed: Vec<String>,
    },
    /// `spec.rollout.paused` is true.
    Held,
    /// The cluster's membership changed a moment ago (Servers being added):
    /// runs start once the values it implies have settled.
    Settling,
}

impl Wait {
    /// A sentence for the Server's condition.
    pub fn message(&self) -> String {
        match self {
            Wait::Budget { role, max, busy } => format!(
                "waiting for the {role} budget: {max} Server(s) of the role at a time, busy: {}",
                listed(busy)
            ),
            Wait::Order { role, pending } => format!(
                "waiting for role {role} to be updated and Ready first: {}",
                listed(pending)
            ),
            Wait::Paused { failed } => format!(
                "the cluster's rollout is paused after failed updates of {}: fix them (a new generation of the Cluster or of those Servers) or annotate them with servermanager.contrail.io/retry",
                listed(failed)
            ),
            Wait::Held => "the cluster's rollout is held (spec.rollout.paused)".to_string(),
            Wait::Settling => {
                "the cluster's membership just changed: waiting for it to settle".to_string()
            }
        }
    }
}

/// What one Server may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to roll out (up to date, blocked, not managed, or unknown).
    Idle,
    /// Never provisioned: install now.
    Install,
    /// Update now: admitted within its roles' budgets.
    Update,
    /// A provision run is in flight.
    Running,
    /// Wait.
    Wait(Wait),
}

/// The cluster-wide picture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Phase.
    pub phase: RolloutPhase,
    /// The earliest role with Servers still to update.
    pub current_role: Option<Role>,
    /// Per role, in update order.
    pub roles: Vec<RoleRolloutStatus>,
    /// Servers whose update failed.
    pub failed: Vec<String>,
    /// Managed Servers running their desired configuration.
    pub updated: usize,
}

/// Every member's decision and the summary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    decisions: BTreeMap<String, Decision>,
    /// The cluster-wide picture.
    pub summary: Summary,
}

impl Plan {
    /// The decision for `name` (`Idle` for a Server the plan does not know).
    pub fn decision(&self, name: &str) -> Decision {
        self.decisions.get(name).cloned().unwrap_or(Decision::Idle)
    }
}

/// A member's decision when it does not depend on the other members (the
/// plan gives the same): not taking part, deleting, blocked, running, an
/// install, or up to date. `None` for an update, which only the whole plan
/// can admit. The Server controller asks this first, so that a reconcile of
/// an install costs O(1), not O(members).
pub fn own_decision(m: &MemberState) -> Option<Decision> {
    if !m.managed || m.suspended || m.deleting || m.desired.is_none() {
        Some(Decision::Idle)
    } else if m.in_flight {
        Some(Decision::Running)
    } else if !m.provisioned {
        Some(Decision::Install)
    } else if m.updated() {
        Some(Decision::Idle)
    } else {
        None
    }
}

/// Plans the cluster's rollout.
pub fn plan(policy: &RolloutSpec, members: &[MemberState]) -> Plan {
    let participants: Vec<&MemberState> = members
        .iter()
        .filter(|m| m.managed && !m.suspended)
        .collect();
    let rank = |m: &MemberState| {
        m.roles
            .iter()
            .map(|r| policy.rank(*r))
            .min()
            .unwrap_or(usize::MAX)
    };

    // Budgets per role.
    let mut roles: BTreeSet<Role> = BTreeSet::new();
    for m in &participants {
        roles.extend(m.roles.iter().copied());
    }
    let total = |r: Role| {
        participants
            .iter()
            .filter(|m| !m.deleting && m.roles.contains(&r))
            .count()
    };
    let max: BTreeMap<Role, usize> = roles
        .iter()
        .map(|r| (*r, policy.max_unavailable_for(*r, total(*r))))
        .collect();
    let mut busy: BTreeMap<Role, BTreeSet<String>> = roles
        .iter()
        .map(|r| {
            let set = participants
                .iter()
                .filter(|m| m.roles.contains(r) && m.unavailable())
                .map(|m| m.name.clone())
                .collect();
            (*r, set)
        })
        .collect();

    let failed: Vec<String> = participants
        .iter()
        .filter(|m| m.failed && !m.deleting)
        .map(|m| m.name.clone())
        .collect();
    let paused = failed.len() >= policy.max_failures.max(1) as usize;

    let mut decisions = BTreeMap::new();
    let mut candidates: Vec<&MemberState> = Vec::new();
    for m in &participants {
        let Some(d) = own_decision(m) else {
            candidates.push(m);
            continue;
        };
        decisions.insert(m.name.clone(), d);
    }
    candidates.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.name.cmp(&b.name)));

    for c in &candidates {
        let decision = if policy.paused {
            Decision::Wait(Wait::Held)
        } else if paused {
            Decision::Wait(Wait::Paused {
                failed: failed.clone(),
            })
        } else if let Some(wait) = order_wait(policy, &participants, c, rank(c)) {
            Decision::Wait(wait)
        } else {
            let full = c.roles.iter().find_map(|r| {
                let set = busy.get(r)?;
                let max = max.get(r).copied().unwrap_or(1);
                let with = set.len() + usize::from(!set.contains(&c.name));
                (with > max).then(|| Wait::Budget {
                    role: *r,
                    max,
                    busy: set.iter().cloned().collect(),
                })
            });
            match full {
                Some(wait) => Decision::Wait(wait),
                None => {
                    for r in &c.roles {
                        if let Some(set) = busy.get_mut(r) {
                            set.insert(c.name.clone());
                        }
                    }
                    Decision::Update
                }
            }
        };
        decisions.insert(c.name.clone(), decision);
    }

    // Summary.
    let mut ordered: Vec<Role> = roles.iter().copied().collect();
    ordered.sort_by_key(|r| (policy.rank(*r), *r));
    let role_status = ordered
        .iter()
        .map(|r| {
            let with: Vec<&&MemberState> = participants
                .iter()
                .filter(|m| !m.deleting && m.roles.contains(r))
                .collect();
            let n = |f: &dyn Fn(&MemberState) -> bool| {
                u32::try_from(with.iter().filter(|m| f(m)).count()).unwrap_or(u32::MAX)
            };
            RoleRolloutStatus {
                role: *r,
                total: n(&|_| true),
                updated: n(&|m| m.updated()),
                ready: n(&|m| m.done()),
                unavailable: n(&|m| m.unavailable()),
                failed: n(&|m| m.failed),
                max_unavailable: u32::try_from(max.get(r).copied().unwrap_or(1))
                    .unwrap_or(u32::MAX),
            }
        })
        .collect();
    let updating: Vec<&&MemberState> = participants
        .iter()
        .filter(|m| !m.deleting && (m.needs_update() || m.updating))
        .collect();
    let current_role = updating.iter().map(|m| rank(m)).min().and_then(|best| {
        ordered
            .iter()
            .copied()
            .find(|r| policy.rank(*r) == best && updating.iter().any(|m| m.roles.contains(r)))
    });
    let installing = participants
        .iter()
        .any(|m| !m.deleting && !m.provisioned && (m.desired.is_some() || m.in_flight));
    let waiting_updates = !candidates.is_empty();
    let phase = if policy.paused && waiting_updates {
        RolloutPhase::Held
    } else if paused && (waiting_updates || !failed.is_empty()) {
        RolloutPhase::Paused
    } else if !updating.is_empty() {
        RolloutPhase::Updating
    } else if installing {
        RolloutPhase::Installing
    } else {
        RolloutPhase::Complete
    };
    Plan {
        decisions,
        summary: Summary {
            phase,
            current_role: if updating.is_empty() {
                None
            } else {
                current_role
            },
            roles: role_status,
            failed,
            updated: participants
                .iter()
                .filter(|m| !m.deleting && m.updated())
                .count(),
        },
    }
}

/// Whether `c` (of rank `rank`) must wait for Servers of earlier roles.
fn order_wait(
    policy: &RolloutSpec,
    participants: &[&MemberState],
    c: &MemberState,
    rank: usize,
) -> Option<Wait> {
    let mut earliest: Option<(usize, Role)> = None;
    let mut pending = Vec::new();
    for m in participants {
        if m.name == c.name || m.deleting || m.done() {
            continue;
        }
        let before = m
            .roles
            .iter()
            .filter(|r| policy.rank(**r) < rank)
            .min_by_key(|r| (policy.rank(**r), **r));
        if let Some(r) = before {
            pending.push(m.name.clone());
            let key = (policy.rank(*r), *r);
            if earliest.is_none_or(|e| key < e) {
                earliest = Some(key);
            }
        }
    }
    earliest.map(|(_, role)| Wait::Order { role, pending })
}

/// Up to ten names, comma-separated, then "…".
pub fn listed(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        out.push_str(&format!(", … ({} in all)", names.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn own_decisions_agree_with_the_whole_plan() {
        let flags = [
            "new",
            "old",
            "cur",
            "run",
            "old down",
            "old failed",
            "cur del",
            "ext",
            "old blocked",
            "old susp",
            "new run",
            "old run down",
            "cur down",
            "new blocked",
        ];
        let members: Vec<MemberState> = flags
            .iter()
            .enumerate()
            .map(|(i, f)| {
                m(
                    &format!("s{i}"),
                    if i % 2 == 0 {
                        &[Agent]
                    } else {
                        &[Controller, Agent]
                    },
                    f,
                )
            })
            .collect();
        for paused in [false, true] {
            let policy = RolloutSpec {
                paused,
                ..Default::default()
            };
            let plan = plan(&policy, &members);
            let mut own = 0;
            for member in &members {
                if let Some(d) = own_decision(member) {
                    own += 1;
                    assert_eq!(plan.decision(&member.name), d, "{}", member.name);
                }
            }
            assert!(own > 0 && own < members.len());
        }
    }

    /// A member from a short description: roles, then flags —
    /// `new` (never provisioned), `old` (provisioned, update pending),
    /// `cur` (up to date), `run` (run in flight), `down` (not available),
    /// `failed`, `del` (deleting), `ext` (External), `blocked`, `susp`.
    fn m(name: &str, roles: &[Role], flags: &str) -> MemberState {
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        let provisioned = !has("new");
        MemberState {
            name: name.into(),
            roles: roles.to_vec(),
            managed: !has("ext"),
            deleting: has("del"),
            suspended: has("susp"),
            provisioned,
            desired: (!has("blocked")).then(|| "h2".to_string()),
            applied: if !provisioned {
                None
            } else if has("cur") {
                Some("h2".into())
            } else {
                Some("h1".into())
            },
            available: provisioned && !has("down"),
            in_flight: has("run"),
            updating: has("updating"),
            failed: has("failed"),
        }
    }

    fn policy(default: i32, per_role: &[(Role, IntOrString)], order: &[Role]) -> RolloutSpec {
        let mut max = BTreeMap::from([("default".to_string(), IntOrString::Int(default))]);
        for (r, v) in per_role {
            max.insert(r.to_string(), v.clone());
        }
        RolloutSpec {
            max_unavailable: max,
            order: order.to_vec(),
            ..RolloutSpec::default()
        }
    }

    fn decisions(p: &Plan, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .map(|n| match p.decision(n) {
                Decision::Idle => "idle".to_string(),
                Decision::Install => "install".to_string(),
                Decision::Update => "update".to_string(),
                Decision::Running => "running".to_string(),
                Decision::Wait(Wait::Budget { role, .. }) => format!("budget:{role}"),
                Decision::Wait(Wait::Order { role, .. }) => format!("order:{role}"),
                Decision::Wait(Wait::Paused { .. }) => "paused".to_string(),
                Decision::Wait(Wait::Held) => "held".to_string(),
                Decision::Wait(Wait::Settling) => "settling".to_string(),
            })
            .collect()
    }

    const ORDER: [Role; 4] = [Analyticsdb, Controller, Analytics, Agent];

    #[test]
    fn installs_never_wait_for_a_budget_or_an_order() {
        let p = plan(
            &policy(1, &[], &ORDER),
            &[
                m("db1", &[Analyticsdb], "new"),
                m("c1", &[Controller], "new"),
                m("c2", &[Controller], "new"),
                m("a1", &[Agent], "new"),
                m("a2", &[Agent], "new run"),
                m("x", &[Agent], "new blocked"),
            ],
        );
        assert_eq!(
            decisions(&p, &["db1", "c1", "c2", "a1", "a2", "x"]),
            [
                "install", "install", "install", "install", "running", "idle"
            ]
        );
        assert_eq!(p.summary.phase, RolloutPhase::Installing);
    }

    #[test]
    fn updates_go_role_by_role_within_budgets() {
        let pol = policy(1, &[(Agent, IntOrString::Int(2))], &ORDER);
        let fleet = |db: &str, c: &str, a: &str| {
            vec![
                m("db1", &[Analyticsdb], db),
                m("c1", &[Controller], c),
                m("c2", &[Controller], c),
                m("a1", &[Agent], a),
                m("a2", &[Agent], a),
                m("a3", &[Agent], a),
            ]
        };
        let all = ["db1", "c1", "c2", "a1", "a2", "a3"];
        // Everything pending: only the database starts.
        let p = plan(&pol, &fleet("old", "old", "old"));
        assert_eq!(
            decisions(&p, &all),
            [
                "update",
                "order:analyticsdb",
                "order:analyticsdb",
                "order:analyticsdb",
                "order:analyticsdb",
                "order:analyticsdb"
            ]
        );
        assert_eq!(p.summary.current_role, Some(Analyticsdb));
        assert_eq!(p.summary.phase, RolloutPhase::Updating);
        // Database done: controllers one at a time (default budget 1).
        let p = plan(&pol, &fleet("cur", "old", "old"));
        assert_eq!(
            decisions(&p, &all),
            [
                "idle",
                "update",
                "budget:controller",
                "order:controller",
                "order:controller",
                "order:controller"
            ]
        );
        assert_eq!(p.summary.current_role, Some(Controller));
        // Updated but not available yet still holds later roles back.
        let p = plan(&pol, &fleet("cur", "cur down", "old"));
        assert_eq!(decisions(&p, &["a1"]), ["order:controller"]);
        // Controllers done: two agents at once.
        let p = plan(&pol, &fleet("cur", "cur", "old"));
        assert_eq!(
            decisions(&p, &all),
            ["idle", "idle", "idle", "update", "update", "budget:agent"]
        );
        // An agent already down uses the budget.
        let mut f = fleet("cur", "cur", "old");
        f[3].available = false;
        let p = plan(&pol, &f);
        assert_eq!(
            decisions(&p, &["a1", "a2", "a3"]),
            ["update", "update", "budget:agent"]
        );
        let mut f = fleet("cur", "cur", "old");
        f[5] = m("a3", &[Agent], "cur down");
        let p = plan(&pol, &f);
        assert_eq!(decisions(&p, &["a1", "a2"]), ["update", "budget:agent"]);
        let roles = &p.summary.roles;
        assert_eq!(
            roles.iter().map(|r| r.role).collect::<Vec<_>>(),
            [Analyticsdb, Controller, Agent]
        );
        let agent = &roles[2];
        assert_eq!(
            (
                agent.total,
                agent.updated,
                agent.ready,
                agent.unavailable,
                agent.max_unavailable
            ),
            (3, 1, 0, 1, 2)
        );
    }

    #[test]
    fn percentages_round_down_to_at_least_one() {
        let pol = policy(1, &[(Agent, IntOrString::String("50%".into()))], &ORDER);
        let agents: Vec<MemberState> = (0..5)
            .map(|i| m(&format!("a{i}"), &[Agent], "old"))
            .collect();
        let p = plan(&pol, &agents);
        let n = |p: &Plan| {
            (0..5)
                .filter(|i| p.decision(&format!("a{i}")) == Decision::Update)
                .count()
        };
        assert_eq!(n(&p), 2);
        let pol = policy(1, &[(Agent, IntOrString::String("10%".into()))], &ORDER);
        assert_eq!(n(&plan(&pol, &agents)), 1);
        let pol = policy(1, &[(Agent, IntOrString::String("100%".into()))], &ORDER);
        assert_eq!(n(&plan(&pol, &agents)), 5);
    }

    #[test]
    fn a_server_with_several_roles_counts_in_each_and_goes_with_its_earliest() {
        let pol = policy(1, &[(Agent, IntOrString::Int(5))], &ORDER);
        let members = [
            m("ca", &[Controller, Analytics], "old"),
            m("c2", &[Controller], "old"),
            m("an", &[Analytics], "old"),
            m("a1", &[Agent], "old"),
        ];
        let p = plan(&pol, &members);
        // "ca" goes with the controllers (by name, after "c2"); "an" waits
        // for role controller.
        assert_eq!(
            decisions(&p, &["ca", "c2", "an", "a1"]),
            [
                "budget:controller",
                "update",
                "order:controller",
                "order:controller"
            ]
        );
        // Controller role done except "ca" running: the analytics budget (1)
        // is used by "ca" too.
        let members = [
            m("ca", &[Controller, Analytics], "cur run"),
            m("c2", &[Controller], "cur"),
            m("an", &[Analytics], "old"),
        ];
        let p = plan(&pol, &members);
        assert_eq!(decisions(&p, &["an"]), ["order:controller"]);
        let members = [
            m("ca", &[Controller, Analytics], "cur down"),
            m("an", &[Analytics], "old"),
        ];
        let p = plan(&policy(1, &[], &[Analytics, Controller]), &members);
        assert_eq!(decisions(&p, &["an"]), ["budget:analytics"]);
    }

    #[test]
    fn unlisted_roles_come_last_together() {
        let pol = policy(1, &[], &[Controller]);
        let members = [
            m("c1", &[Controller], "old"),
            m("lb1", &[Lb], "old"),
            m("k1", &[Kubemanager], "old"),
        ];
        let p = plan(&pol, &members);
        assert_eq!(
            decisions(&p, &["c1", "lb1", "k1"]),
            ["update", "order:controller", "order:controller"]
        );
        let members = [
            m("c1", &[Controller], "cur"),
            m("lb1", &[Lb], "old"),
            m("k1", &[Kubemanager], "old"),
        ];
        let p = plan(&pol, &members);
        assert_eq!(decisions(&p, &["lb1", "k1"]), ["update", "update"]);
    }

    #[test]
    fn failures_pause_the_rollout_and_hold_blocks_updates_only() {
        let pol = RolloutSpec {
            max_failures: 1,
            ..policy(2, &[], &ORDER)
        };
        let members = [
            m("a1", &[Agent], "cur down failed"),
            m("a2", &[Agent], "old"),
            m("a3", &[Agent], "new"),
            m("a4", &[Agent], "old del"),
        ];
        let p = plan(&pol, &members);
        assert_eq!(
            decisions(&p, &["a1", "a2", "a3", "a4"]),
            ["idle", "paused", "install", "idle"]
        );
        assert_eq!(p.summary.phase, RolloutPhase::Paused);
        assert_eq!(p.summary.failed, ["a1"]);
        let Decision::Wait(w) = p.decision("a2") else {
            panic!()
        };
        assert!(w.message().contains("a1"), "{}", w.message());
        // Two failures allowed: not paused yet; the budget counts a1 (down)
        // and a4 (deleting).
        let p = plan(
            &RolloutSpec {
                max_failures: 2,
                max_unavailable: BTreeMap::from([("default".into(), IntOrString::Int(3))]),
                ..pol.clone()
            },
            &members,
        );
        assert_eq!(decisions(&p, &["a2"]), ["update"]);
        let p = plan(
            &RolloutSpec {
                max_failures: 2,
                ..pol.clone()
            },
            &members,
        );
        assert_eq!(decisions(&p, &["a2"]), ["budget:agent"]);
        // Held.
        let held = RolloutSpec {
            paused: true,
            ..policy(2, &[], &ORDER)
        };
        let p = plan(&held, &[m("a2", &[Agent], "old"), m("a3", &[Agent], "new")]);
        assert_eq!(decisions(&p, &["a2", "a3"]), ["held", "install"]);
        assert_eq!(p.summary.phase, RolloutPhase::Held);
    }

    #[test]
    fn external_suspended_and_blocked_members_do_not_hold_the_rollout() {
        let pol = policy(1, &[], &ORDER);
        let members = [
            m("cx", &[Controller], "ext old"),
            m("cs", &[Controller], "susp old"),
            m("a1", &[Agent], "old"),
        ];
        assert_eq!(decisions(&plan(&pol, &members), &["a1"]), ["update"]);
        // A blocked controller (e.g. its Secret is missing) is not updated:
        // the agents wait for it.
        let members = [m("cb", &[Controller], "blocked"), m("a1", &[Agent], "old")];
        assert_eq!(
            decisions(&plan(&pol, &members), &["a1"]),
            ["order:controller"]
        );
    }

    #[test]
    fn complete_when_everything_is_current() {
        let pol = policy(1, &[], &ORDER);
        let p = plan(
            &pol,
            &[m("c1", &[Controller], "cur"), m("a1", &[Agent], "cur")],
        );
        assert_eq!(p.summary.phase, RolloutPhase::Complete);
        assert_eq!(p.summary.current_role, None);
        assert_eq!(p.summary.updated, 2);
    }
}
