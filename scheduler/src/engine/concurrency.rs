//! Concurrency groups across runs. GitHub's groups are repository-wide: a run of one
//! workflow can wait for, or cancel, a run or a job of another. Each engine runs one
//! workflow, so the groups live outside the engines, in a [`Coordinator`] that every run of
//! one driver shares. An engine asks its [`Concurrency`] whether an entry may run; what that
//! answer does to entries of *other* runs (an older pending entry cancelled, the running one
//! cancelled by `cancel-in-progress`, a pending one granted when the running one leaves)
//! comes back as [`GroupEffect`]s, which the driver applies to the engine they concern.
//!
//! Every decision an engine depends on is thus either an answer to its own question or an
//! effect applied to it as an operation, so a driver that records both can rebuild one run's
//! engine by replaying that run alone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::LegId;

/// What holds or waits for a concurrency group, within one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupEntry {
    /// The run itself, for a workflow-level `concurrency`: no job starts before it holds
    /// the group.
    Run,
    /// One invocation of a called workflow with its own workflow-level `concurrency` (the
    /// engine's number for the invocation).
    Call(u32),
    /// A job leg with a job-level `concurrency`.
    Leg(LegId),
}

/// A group an entry asks for: `key` is lower-cased (groups are case-insensitive), `shown`
/// is the name as evaluated, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRequest {
    pub key: String,
    pub shown: String,
    pub cancel_in_progress: bool,
}

/// The answer to an entry entering a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The group was free: the entry holds it now.
    Run,
    /// The group is held: the entry is its pending entry until granted or cancelled.
    Pend,
}

/// What a group decision does to an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEffect {
    /// The pending entry now holds the group: it may start.
    Grant(GroupEntry),
    /// The entry is cancelled: a newer entry replaced it as pending, or `cancel-in-progress`
    /// stopped it while it held the group.
    Cancel { entry: GroupEntry, reason: String },
}

/// Where an engine's entries enter and leave groups.
pub trait Concurrency: Send {
    /// `entry` of this run asks for `group`.
    fn enter(&mut self, entry: GroupEntry, group: &GroupRequest) -> Admission;
    /// `entry` leaves the group `key` (it concluded, or stopped waiting).
    fn leave(&mut self, entry: GroupEntry, key: &str);
}

/// An entry as the coordinator records it: which run, which entry.
type Slotted<R> = (R, GroupEntry);

#[derive(Debug)]
struct Slot<R> {
    shown: String,
    running: Option<Slotted<R>>,
    pending: Option<Slotted<R>>,
}

/// The groups of every run of one driver: at most one running and one pending entry per
/// group; a newer pending entry cancels the older; `cancel-in-progress` cancels the running
/// one. `R` names a run (its index, its id).
#[derive(Debug)]
pub struct Coordinator<R> {
    slots: HashMap<String, Slot<R>>,
    effects: VecDeque<(R, GroupEffect)>,
}

impl<R> Default for Coordinator<R> {
    fn default() -> Self {
        Coordinator {
            slots: HashMap::new(),
            effects: VecDeque::new(),
        }
    }
}

impl<R: Clone + PartialEq> Coordinator<R> {
    pub fn enter(&mut self, run: R, entry: GroupEntry, group: &GroupRequest) -> Admission {
        let slot = self.slots.entry(group.key.clone()).or_insert_with(|| Slot {
            shown: group.shown.clone(),
            running: None,
            pending: None,
        });
        let Some(running) = slot.running.clone() else {
            slot.running = Some((run, entry));
            return Admission::Run;
        };
        let reason = format!(
            "Canceling since a higher priority waiting request for '{}' exists",
            group.shown
        );
        if let Some((older_run, older)) = slot.pending.replace((run, entry)) {
            self.effects.push_back((
                older_run,
                GroupEffect::Cancel {
                    entry: older,
                    reason: reason.clone(),
                },
            ));
        }
        if group.cancel_in_progress {
            let (running_run, running_entry) = running;
            self.effects.push_back((
                running_run,
                GroupEffect::Cancel {
                    entry: running_entry,
                    reason,
                },
            ));
        }
        Admission::Pend
    }

    pub fn leave(&mut self, run: R, entry: GroupEntry, key: &str) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let leaving = Some((run, entry));
        if slot.running == leaving {
            slot.running = slot.pending.take();
            if let Some((next_run, next)) = slot.running.clone() {
                self.effects.push_back((next_run, GroupEffect::Grant(next)));
            }
        } else if slot.pending == leaving {
            slot.pending = None;
        }
        if slot.running.is_none() && slot.pending.is_none() {
            self.slots.remove(key);
        }
    }

    /// The effects decided since the last call, oldest first.
    pub fn take_effects(&mut self) -> Vec<(R, GroupEffect)> {
        self.effects.drain(..).collect()
    }

    /// Puts back what a rebuilt engine holds or waits for (after a restart).
    pub fn restore(&mut self, run: R, holdings: &[GroupHolding]) {
        for holding in holdings {
            let slot = self
                .slots
                .entry(holding.group.key.clone())
                .or_insert_with(|| Slot {
                    shown: holding.group.shown.clone(),
                    running: None,
                    pending: None,
                });
            let place = if holding.held {
                &mut slot.running
            } else {
                &mut slot.pending
            };
            *place = Some((run.clone(), holding.entry));
        }
    }

    /// The groups held now, by shown name, and how many entries each has (1 or 2).
    pub fn occupancy(&self) -> Vec<(String, usize)> {
        let mut groups: Vec<(String, usize)> = self
            .slots
            .values()
            .map(|s| {
                let entries = usize::from(s.running.is_some()) + usize::from(s.pending.is_some());
                (s.shown.clone(), entries)
            })
            .collect();
        groups.sort();
        groups
    }
}

/// An entry of one engine and its group, held or pending: what a rebuilt engine tells the
/// coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHolding {
    pub entry: GroupEntry,
    pub group: GroupRequest,
    pub held: bool,
}

/// One run's view of a coordinator shared by several runs.
pub struct SharedConcurrency<R> {
    run: R,
    coordinator: Arc<Mutex<Coordinator<R>>>,
}

impl<R> SharedConcurrency<R> {
    pub fn new(run: R, coordinator: Arc<Mutex<Coordinator<R>>>) -> Self {
        SharedConcurrency { run, coordinator }
    }
}

impl<R: Clone + PartialEq + Send> Concurrency for SharedConcurrency<R> {
    fn enter(&mut self, entry: GroupEntry, group: &GroupRequest) -> Admission {
        match self.coordinator.lock() {
            Ok(mut c) => c.enter(self.run.clone(), entry, group),
            // A poisoned lock means a panic elsewhere; letting the entry run keeps the run
            // going rather than waiting forever.
            Err(_) => Admission::Run,
        }
    }

    fn leave(&mut self, entry: GroupEntry, key: &str) {
        if let Ok(mut c) = self.coordinator.lock() {
            c.leave(self.run.clone(), entry, key);
        }
    }
}

/// Answers recorded while a run was live ([`super::Engine::take_admissions`]), given back in
/// the same order when its engine is rebuilt by replay; entering and leaving change nothing
/// else. Past the end of the record every entry runs (the driver compares how many answers
/// the engine took with the record, to see a replay that diverged).
pub struct Replayed {
    answers: VecDeque<Admission>,
}

impl Replayed {
    pub fn new(answers: impl IntoIterator<Item = Admission>) -> Self {
        Replayed {
            answers: answers.into_iter().collect(),
        }
    }
}

impl Concurrency for Replayed {
    fn enter(&mut self, _: GroupEntry, _: &GroupRequest) -> Admission {
        self.answers.pop_front().unwrap_or(Admission::Run)
    }

    fn leave(&mut self, _: GroupEntry, _: &str) {}
}
