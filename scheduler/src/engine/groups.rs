//! Concurrency groups as one run sees them: at most one running and one pending entry per
//! group, as on GitHub. An entry is the run (workflow-level `concurrency`), a job leg
//! (job-level `concurrency`) or one invocation of a called workflow with its own
//! workflow-level `concurrency`; a run or an invocation starts its jobs only once it holds
//! the group. Whether the group is free is the [`Concurrency`]'s answer (groups are shared
//! by every run of a driver); what that does to other entries comes back as effects.

use super::concurrency::{Admission, Concurrency, GroupEffect, GroupEntry, GroupHolding};
use super::keys::GroupSpec;
use super::{Engine, EngineEvent, Entry, LegId};

/// Where the engine's entries get their answers.
pub(super) enum Groups {
    /// Driven alone: the engine keeps its own groups and applies their effects itself.
    Private(super::concurrency::Coordinator<()>),
    /// Driven with other runs: the driver applies the effects (to this and other engines).
    Shared(Box<dyn Concurrency>),
}

impl Groups {
    fn enter(&mut self, entry: GroupEntry, group: &GroupSpec) -> Admission {
        let request = group.request();
        match self {
            Groups::Private(c) => c.enter((), entry, &request),
            Groups::Shared(c) => c.enter(entry, &request),
        }
    }

    fn leave(&mut self, entry: GroupEntry, key: &str) {
        match self {
            Groups::Private(c) => c.leave((), entry, key),
            Groups::Shared(c) => c.leave(entry, key),
        }
    }
}

fn leg_id(leg: usize) -> LegId {
    LegId(u32::try_from(leg).unwrap_or(u32::MAX))
}

impl Entry {
    pub(super) fn public(self) -> GroupEntry {
        match self {
            Entry::Run => GroupEntry::Run,
            Entry::Call(scope) => GroupEntry::Call(u32::try_from(scope).unwrap_or(u32::MAX)),
            Entry::Leg(leg) => GroupEntry::Leg(leg_id(leg)),
        }
    }
}

impl Engine {
    fn entry_of(&self, public: GroupEntry) -> Option<Entry> {
        match public {
            GroupEntry::Run => Some(Entry::Run),
            GroupEntry::Call(scope) => {
                let scope = usize::try_from(scope).ok()?;
                (scope < self.scopes.len() && scope > 0).then_some(Entry::Call(scope))
            }
            GroupEntry::Leg(leg) => self.leg_index(leg).map(Entry::Leg),
        }
    }

    /// An entry enters its group: true when it may run now; otherwise it waits as the
    /// group's pending entry until granted (or cancelled by a newer one).
    pub(super) fn enter_group(&mut self, entry: Entry, group: &GroupSpec) -> bool {
        let admission = self.groups.enter(entry.public(), group);
        self.admissions.push(admission);
        match admission {
            Admission::Run => {
                self.set_held(entry, true);
                true
            }
            Admission::Pend => {
                let (leg, name) = match entry {
                    Entry::Leg(leg) => (Some(leg_id(leg)), self.legs[leg].name.clone()),
                    Entry::Call(scope) => (None, self.call_name(scope)),
                    Entry::Run => (None, self.workflow_name.clone()),
                };
                self.events.push(EngineEvent::LegPending {
                    leg,
                    name,
                    group: group.shown.clone(),
                });
                false
            }
        }
    }

    fn set_held(&mut self, entry: Entry, held: bool) {
        match entry {
            Entry::Leg(leg) => self.legs[leg].group_held = held,
            Entry::Call(scope) => self.scopes[scope].group_held = held,
            Entry::Run => self.scopes[0].group_held = held,
        }
    }

    /// A called workflow's invocation with a workflow-level group: true when its jobs may
    /// start now. A group the invocation is already inside (the run's, or an enclosing
    /// call's) can never be free: the invocation is cancelled, as GitHub does.
    pub(super) fn enter_call_group(&mut self, scope: usize, group: GroupSpec) -> bool {
        if let Some(parent) = self.scopes[scope].parent {
            let enclosing = self.nodes[parent].scope;
            if self.enclosing_group_is(enclosing, &group) {
                self.scopes[scope].cancelled = Some(format!(
                    "Canceling since a deadlock for concurrency group '{}' was detected between the calling workflow and the called workflow",
                    group.shown
                ));
                return true;
            }
        }
        let runs = self.enter_group(Entry::Call(scope), &group);
        self.scopes[scope].group = Some(group);
        runs
    }

    /// Whether `group` is the run's workflow group or the group of the called workflow
    /// `scope` or any call enclosing it.
    pub(super) fn enclosing_group_is(&self, mut scope: usize, group: &GroupSpec) -> bool {
        if self.run_group.as_ref().is_some_and(|g| g.key == group.key) {
            return true;
        }
        loop {
            if self.scopes[scope]
                .group
                .as_ref()
                .is_some_and(|g| g.key == group.key)
            {
                return true;
            }
            match self.scopes[scope].parent {
                Some(caller) => scope = self.nodes[caller].scope,
                None => return false,
            }
        }
    }

    fn call_name(&self, scope: usize) -> String {
        self.scopes[scope]
            .name_prefix
            .trim_end_matches(" / ")
            .to_owned()
    }

    fn cancel_entry(&mut self, entry: Entry, reason: &str) {
        match entry {
            Entry::Leg(leg) => self.cancel_leg(leg, reason),
            Entry::Call(scope) => {
                self.cancel_scope(scope, reason, 0);
                // Jobs held back for the group are decided now, and so cancelled.
                self.release_held(scope);
            }
            // Still waiting: none of its jobs ever starts. Holding the group
            // (`cancel-in-progress`): cancelled as a user's cancel is.
            Entry::Run if !self.scopes[0].group_held => {
                self.cancel_scope(0, reason, 0);
                self.release_held(0);
            }
            Entry::Run => {
                self.cancel_run_because(reason);
            }
        }
    }

    fn release_held(&mut self, scope: usize) {
        let held = std::mem::take(&mut self.scopes[scope].held);
        self.ready_nodes.extend(held);
    }

    /// A group decision about one of this run's entries (from the driver, or from the
    /// engine's own groups when driven alone).
    pub(super) fn apply_effect(&mut self, effect: GroupEffect) {
        match effect {
            GroupEffect::Grant(public) => {
                let Some(entry) = self.entry_of(public) else {
                    return;
                };
                self.set_held(entry, true);
                match entry {
                    Entry::Call(scope) => self.release_held(scope),
                    Entry::Run => self.release_held(0),
                    // `poll()` dispatches a queued leg once it holds its group.
                    Entry::Leg(_) => {}
                }
            }
            GroupEffect::Cancel { entry, reason } => {
                if let Some(entry) = self.entry_of(entry) {
                    self.cancel_entry(entry, &reason);
                }
            }
        }
    }

    /// Applies the effects of an engine driven alone until none is left.
    pub(super) fn settle_private_groups(&mut self) {
        loop {
            let effects = match &mut self.groups {
                Groups::Private(c) => c.take_effects(),
                Groups::Shared(_) => return,
            };
            if effects.is_empty() {
                return;
            }
            for ((), effect) in effects {
                self.apply_effect(effect);
            }
            self.advance();
        }
    }

    /// The entry leaves its group; the pending entry, if any, is granted it.
    pub(super) fn release_entry(&mut self, key: &str, entry: Entry) {
        self.set_held(entry, false);
        self.groups.leave(entry.public(), key);
    }

    pub(super) fn release_group(&mut self, leg_index: usize) {
        let Some(key) = self.legs[leg_index]
            .keys
            .as_ref()
            .and_then(|k| k.concurrency.as_ref())
            .map(|g| g.key.clone())
        else {
            return;
        };
        self.release_entry(&key, Entry::Leg(leg_index));
    }

    /// Run cancellation: the run and the invocations still waiting for their group give up
    /// the wait; their jobs are decided at once (and, the run being cancelled, do not run
    /// unless their condition says so).
    pub(super) fn release_waiting_calls(&mut self) {
        for scope in 0..self.scopes.len() {
            let waiting = !self.scopes[scope].group_held && !self.scopes[scope].held.is_empty();
            let key = match (scope, &self.scopes[scope].group) {
                (0, _) => self.run_group.as_ref().map(|g| g.key.clone()),
                (_, group) => group.as_ref().map(|g| g.key.clone()),
            };
            if let (true, Some(key)) = (waiting, key) {
                let entry = if scope == 0 {
                    Entry::Run
                } else {
                    Entry::Call(scope)
                };
                self.groups.leave(entry.public(), &key);
                self.release_held(scope);
            }
        }
    }

    /// What this run holds or waits for, for a coordinator rebuilt after a restart.
    pub fn group_holdings(&self) -> Vec<GroupHolding> {
        let mut holdings = Vec::new();
        let waiting_or_held = |held: bool, waiting: bool| held || waiting;
        if let Some(group) = &self.run_group {
            let scope = &self.scopes[0];
            if waiting_or_held(scope.group_held, !scope.held.is_empty()) && !self.is_finished() {
                holdings.push(GroupHolding {
                    entry: GroupEntry::Run,
                    group: group.request(),
                    held: scope.group_held,
                });
            }
        }
        for (index, scope) in self.scopes.iter().enumerate().skip(1) {
            if let Some(group) = &scope.group {
                if scope.remaining > 0 && waiting_or_held(scope.group_held, !scope.held.is_empty())
                {
                    holdings.push(GroupHolding {
                        entry: Entry::Call(index).public(),
                        group: group.request(),
                        held: scope.group_held,
                    });
                }
            }
        }
        for (index, leg) in self.legs.iter().enumerate() {
            let Some(group) = leg.keys.as_ref().and_then(|k| k.concurrency.as_ref()) else {
                continue;
            };
            if leg.state != super::LegState::Done {
                holdings.push(GroupHolding {
                    entry: Entry::Leg(index).public(),
                    group: group.request(),
                    held: leg.group_held,
                });
            }
        }
        holdings
    }
}
