//! Concurrency groups: at most one running and one pending entry per group, as on GitHub.
//! An entry is a job leg (job-level `concurrency`) or one invocation of a called workflow
//! with its own workflow-level `concurrency`; such an invocation starts its jobs only once it
//! holds the group.

use super::keys::GroupSpec;
use super::{Engine, EngineEvent, Entry, LegId};

impl Engine {
    /// An entry enters its group: it runs when the group is free (returns true); otherwise it
    /// becomes the group's pending entry, replacing (cancelling) an older pending one, and
    /// with `cancel-in-progress` the running entry is cancelled too.
    pub(super) fn enter_group(&mut self, entry: Entry, group: &GroupSpec) -> bool {
        let slot = self.groups.entry(group.key.clone()).or_default();
        let Some(running) = slot.running else {
            slot.running = Some(entry);
            return true;
        };
        let reason = format!(
            "Canceling since a higher priority waiting request for '{}' exists",
            group.shown
        );
        if let Some(pending) = slot.pending.take() {
            self.cancel_entry(pending, &reason);
        }
        if let Some(slot) = self.groups.get_mut(&group.key) {
            slot.pending = Some(entry);
        }
        let (leg, name) = match entry {
            Entry::Leg(leg) => (Some(LegId(leg as u32)), self.legs[leg].name.clone()),
            Entry::Call(scope) => (None, self.call_name(scope)),
        };
        self.events.push(EngineEvent::LegPending {
            leg,
            name,
            group: group.shown.clone(),
        });
        if group.cancel_in_progress {
            self.cancel_entry(running, &reason);
        }
        false
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
        }
    }

    fn release_held(&mut self, scope: usize) {
        let held = std::mem::take(&mut self.scopes[scope].held);
        self.ready_nodes.extend(held);
    }

    /// The entry leaves its group; the pending entry, if any, takes its place.
    pub(super) fn release_entry(&mut self, key: &str, entry: Entry) {
        let Some(slot) = self.groups.get_mut(key) else {
            return;
        };
        if slot.running == Some(entry) {
            slot.running = slot.pending.take();
            if let Some(Entry::Call(scope)) = slot.running {
                self.release_held(scope);
            }
        } else if slot.pending == Some(entry) {
            slot.pending = None;
        }
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

    /// Run cancellation: invocations still waiting for their group give up the wait; their
    /// jobs are decided at once (and, the run being cancelled, do not run unless their
    /// condition says so).
    pub(super) fn release_waiting_calls(&mut self) {
        let waiting: Vec<usize> = self
            .groups
            .values_mut()
            .filter_map(|slot| match slot.pending {
                Some(Entry::Call(scope)) => {
                    slot.pending = None;
                    Some(scope)
                }
                _ => None,
            })
            .collect();
        for scope in waiting {
            self.release_held(scope);
        }
    }
}
