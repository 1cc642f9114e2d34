//! The replay loop: for each run, oldest first, every cache step's key is evaluated over the
//! commit's tree, looked up in a real kiln cache store with the run's readable scopes (exact
//! key, prefixes, restore keys, scope by scope, as the server does for a job), and saved on a
//! miss into the run's own scope, as the step would (write-once: a key already saved there is
//! a conflict, as on GitHub). Restores run in step order, then saves in reverse order, as
//! post steps do.

use crate::content::{millis, ContentModel, Speeds};
use crate::error::{BenchError, Result};
use crate::history::Run;
use crate::report::{Bytes, CommitReport, KeyChange, StepOutcome, StepReport, Timing, Totals};
use crate::steps::{discover, CacheKind, CacheStepDef, EvaluatedKey, RunFacts};
use crate::tree::{CommitTree, Objects};
use kiln_cache::client::tree_version;
use kiln_cache::digest::{ChunkRef, Digest};
use kiln_cache::index::{EntryKind, MatchKind, Reservation};
use kiln_cache::{CacheError, CacheStore, StoreConfig};
use kiln_workflow::model::Param;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Where a run's cache steps come from.
pub enum Workflows {
    /// Each commit's own `.github/workflows/*.yml`.
    OfEachCommit,
    /// One workflow (`-W`) applied to every commit.
    Fixed(Vec<CacheStepDef>),
}

/// Reads and parses workflow files of a commit, once per blob.
struct WorkflowCache {
    parsed: HashMap<String, std::result::Result<Vec<CacheStepDef>, String>>,
}

impl WorkflowCache {
    fn defs(
        &mut self,
        objects: &Objects,
        commit_tree: &str,
    ) -> Result<(Vec<CacheStepDef>, Vec<String>)> {
        let mut defs = Vec::new();
        let mut skipped = Vec::new();
        let Some(dir) = subtree(objects, commit_tree, &[".github", "workflows"])? else {
            return Ok((defs, skipped));
        };
        for entry in objects.tree(&dir)?.iter() {
            let name = String::from_utf8_lossy(&entry.name).into_owned();
            if !(name.ends_with(".yml") || name.ends_with(".yaml"))
                || entry.mode & 0o170000 != 0o100000
            {
                continue;
            }
            let path = format!(".github/workflows/{name}");
            if !self.parsed.contains_key(&entry.oid) {
                let parsed = parse_defs(&path, &objects.blob(&entry.oid)?);
                self.parsed.insert(entry.oid.clone(), parsed);
            }
            match &self.parsed[&entry.oid] {
                Ok(found) => defs.extend(found.iter().cloned()),
                Err(why) => skipped.push(format!("{path}: {why}")),
            }
        }
        Ok((defs, skipped))
    }
}

/// The cache steps of one workflow file's text.
pub fn parse_defs(path: &str, text: &[u8]) -> std::result::Result<Vec<CacheStepDef>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    let parsed = kiln_workflow::parse_workflow(path, text);
    match parsed.value {
        Some(workflow) if !parsed.has_errors() => Ok(discover(path, &workflow)),
        _ => Err(parsed
            .errors()
            .next()
            .map(|d| d.message.clone())
            .unwrap_or_else(|| "invalid workflow".into())),
    }
}

fn subtree(objects: &Objects, root: &str, path: &[&str]) -> Result<Option<String>> {
    let mut current = root.to_string();
    for name in path {
        let tree = objects.tree(&current)?;
        match tree
            .iter()
            .find(|e| e.name == name.as_bytes() && e.mode & 0o170000 == 0o040000)
        {
            Some(e) => current = e.oid.clone(),
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// Accumulates one replay.
struct Replay<'a> {
    objects: &'a Objects,
    cwd: String,
    repository: String,
    store: CacheStore,
    model: ContentModel,
    speeds: Speeds,
    key_override: Option<Param>,
    fresh: HashMap<Digest, u64>,
    next_chunk: u64,
    last_content: HashMap<String, Vec<Digest>>,
    last_key: HashMap<(String, String), EvaluatedKey>,
    rows: Vec<StepReport>,
    row_of: HashMap<(String, String), usize>,
    family_of: HashMap<String, String>,
    saved_by_row: Vec<(HashSet<Digest>, u64)>,
    commits: Vec<CommitReport>,
}

struct PendingSave {
    row: usize,
    label: String,
    key: String,
    version: String,
    base: Option<Vec<Digest>>,
    outcome: usize,
}

const MAX_KEY_CHANGES: usize = 200;

impl Replay<'_> {
    fn row(&mut self, def: &CacheStepDef, family: &str) -> usize {
        let id = (def.label(), family.to_string());
        if let Some(&row) = self.row_of.get(&id) {
            return row;
        }
        self.rows.push(StepReport {
            workflow: def.workflow.clone(),
            job: def.job.clone(),
            step: def.step.clone(),
            uses: def.uses.clone(),
            key_family: family.to_string(),
            counts: Default::default(),
            chunked: Bytes::default(),
            archive: Bytes::default(),
            timing: Timing::default(),
            key_changes: Vec::new(),
        });
        self.saved_by_row.push((HashSet::new(), 0));
        self.row_of.insert(id, self.rows.len() - 1);
        self.rows.len() - 1
    }

    fn run(
        &mut self,
        run: &Run,
        number: u64,
        defs: &[CacheStepDef],
        skipped: Vec<String>,
    ) -> Result<()> {
        let tree = CommitTree::new(self.objects, &run.commit.tree, &self.cwd);
        let facts = RunFacts {
            repository: self.repository.clone(),
            git_ref: run.scope.clone(),
            sha: run.commit.oid.clone(),
            event_name: run.event.to_string(),
            run_number: number,
            base_ref: run.base_ref.clone(),
        };
        let mut report = CommitReport {
            sha: run.commit.oid.clone(),
            subject: run.commit.subject.clone(),
            time: run.commit.time,
            scope: run.scope.clone(),
            steps: Vec::new(),
            skipped_workflows: skipped,
        };
        let mut saves = Vec::new();
        for original in defs {
            let def = match &self.key_override {
                Some(key) => original.with_key(key.clone()),
                None => original.clone(),
            };
            let label = def.label();
            let evaluated = match def.evaluate(&tree, &facts) {
                Ok(e) => e,
                Err(message) => {
                    let family = self.family_of.get(&label).cloned().unwrap_or_default();
                    let row = self.row(&def, &family);
                    self.rows[row].counts.errors += 1;
                    report.steps.push(StepOutcome {
                        step: row,
                        outcome: "error".into(),
                        key: String::new(),
                        matched_key: None,
                        save: None,
                        uploaded: 0,
                        error: Some(message),
                    });
                    continue;
                }
            };
            let family = kiln_cache::stats::key_family(&evaluated.key);
            self.family_of.insert(label.clone(), family.clone());
            let row = self.row(&def, &family);
            self.note_key_change(row, &label, run, &evaluated);
            let version = tree_version(&evaluated.paths);
            let mut outcome = StepOutcome {
                step: row,
                outcome: "save-only".into(),
                key: evaluated.key.clone(),
                matched_key: None,
                save: None,
                uploaded: 0,
                error: None,
            };
            let mut exact = false;
            let mut base = None;
            if def.kind.restores() {
                let mut keys = vec![evaluated.key.clone()];
                for k in &evaluated.restore_keys {
                    if !keys.contains(k) && keys.len() < 10 {
                        keys.push(k.clone());
                    }
                }
                let hit = self
                    .store
                    .lookup(&self.repository, &run.reads, &keys, &version, true)?;
                let counts = &mut self.rows[row].counts;
                counts.lookups += 1;
                match hit {
                    Some((entry, kind)) => {
                        exact = kind == MatchKind::Exact;
                        if exact {
                            counts.exact_hits += 1;
                            outcome.outcome = "exact".into();
                        } else {
                            counts.restore_key_hits += 1;
                            outcome.outcome = "restore-key".into();
                        }
                        outcome.matched_key = Some(entry.key.clone());
                        let content: Vec<Digest> = entry.chunks.iter().map(|c| c.digest).collect();
                        self.restored(row, content.len());
                        base = Some(content);
                    }
                    None => {
                        counts.misses += 1;
                        outcome.outcome = "miss".into();
                    }
                }
            }
            report.steps.push(outcome);
            let saves_now = match def.kind {
                CacheKind::Save => true,
                CacheKind::Restore => false,
                CacheKind::Cache | CacheKind::Setup => !exact,
            };
            if saves_now {
                saves.push(PendingSave {
                    row,
                    label,
                    key: evaluated.key,
                    version,
                    base,
                    outcome: report.steps.len() - 1,
                });
            }
        }
        for save in saves.into_iter().rev() {
            let (result, uploaded) = self.save(&save, run)?;
            let step = &mut report.steps[save.outcome];
            step.save = Some(result.into());
            step.uploaded = uploaded;
        }
        self.commits.push(report);
        Ok(())
    }

    fn restored(&mut self, row: usize, chunks: usize) {
        let bytes = self.model.compressed(chunks);
        let raw = chunks as u64 * self.model.chunk;
        let r = &mut self.rows[row];
        r.chunked.downloaded += bytes;
        r.archive.downloaded += bytes;
        r.timing.kiln_restore_ms += millis(raw, self.speeds.kiln_restore);
        r.timing.archive_restore_ms += millis(raw, self.speeds.archive_restore);
    }

    fn note_key_change(&mut self, row: usize, label: &str, run: &Run, now: &EvaluatedKey) {
        let id = (label.to_string(), run.scope.clone());
        let before = self.last_key.get(&id).or_else(|| {
            run.reads
                .iter()
                .find_map(|s| self.last_key.get(&(label.to_string(), s.clone())))
        });
        if let Some(before) = before {
            if before.key != now.key {
                let mut causes = Vec::new();
                let old: HashMap<&str, &str> = before
                    .hashed
                    .iter()
                    .map(|(p, b)| (p.as_str(), b.as_str()))
                    .collect();
                let new: HashSet<&str> = now.hashed.iter().map(|(p, _)| p.as_str()).collect();
                for (path, blob) in &now.hashed {
                    match old.get(path.as_str()) {
                        None => causes.push(format!("{path} (added)")),
                        Some(b) if *b != blob => causes.push(format!("{path} (changed)")),
                        _ => {}
                    }
                }
                for (path, _) in &before.hashed {
                    if !new.contains(path.as_str()) {
                        causes.push(format!("{path} (removed)"));
                    }
                }
                if causes.is_empty() {
                    causes.push("key expression".into());
                }
                let changes = &mut self.rows[row].key_changes;
                if changes.len() < MAX_KEY_CHANGES {
                    changes.push(KeyChange {
                        commit: run.commit.oid.clone(),
                        scope: run.scope.clone(),
                        from: before.key.clone(),
                        to: now.key.clone(),
                        causes,
                    });
                }
            }
        }
        self.last_key.insert(id, now.clone());
    }

    fn fresh_chunk(&mut self) -> Digest {
        self.next_chunk += 1;
        let digest = Digest::of(&self.next_chunk.to_le_bytes());
        self.fresh.insert(digest, self.next_chunk);
        digest
    }

    /// The content a save writes: what it started from with the model's churn applied.
    fn content_for(&mut self, save: &PendingSave) -> Vec<Digest> {
        let n = self.model.chunks();
        let base = save
            .base
            .clone()
            .or_else(|| self.last_content.get(&save.label).cloned());
        match base {
            Some(mut content) if !content.is_empty() => {
                // A model changed between saves (or an entry of another shape): fill or cut.
                content.truncate(n);
                while content.len() < n {
                    content.push(self.fresh_chunk());
                }
                let changed = self.model.changed_chunks();
                // Which chunks change rotates from save to save.
                let start = (self.next_chunk as usize) % n;
                for i in 0..changed {
                    content[(start + i) % n] = self.fresh_chunk();
                }
                content
            }
            _ => (0..n).map(|_| self.fresh_chunk()).collect(),
        }
    }

    fn save(&mut self, save: &PendingSave, run: &Run) -> Result<(&'static str, u64)> {
        let reservation = Reservation {
            repo: self.repository.clone(),
            scope: run.scope.clone(),
            key: save.key.clone(),
            version: save.version.clone(),
            kind: EntryKind::Tree,
        };
        let id = match self.store.reserve_native(reservation) {
            Ok(id) => id,
            Err(CacheError::AlreadyExists { .. }) => {
                self.rows[save.row].counts.save_conflicts += 1;
                return Ok(("conflict", 0));
            }
            Err(e) => return Err(e.into()),
        };
        let content = self.content_for(save);
        let refs: Vec<ChunkRef> = content
            .iter()
            .map(|d| ChunkRef { digest: *d, len: 8 })
            .collect();
        let answer = self.store.missing_chunks(id, &refs)?;
        for digest in &answer.missing {
            let counter = *self
                .fresh
                .get(digest)
                .ok_or_else(|| BenchError::BadObject {
                    oid: digest.to_hex(),
                    reason: "the store lost a chunk of an earlier save".into(),
                })?;
            let encoded = kiln_cache::chunks::encode_chunk(&counter.to_le_bytes(), 0);
            self.store.put_native_chunk(id, digest, &encoded)?;
        }
        self.store
            .commit_native(id, refs.len() as u64 * 8, &refs, &[])?;
        let n = content.len();
        let uploaded = self.model.compressed(answer.missing.len());
        let raw = n as u64 * self.model.chunk;
        let row = &mut self.rows[save.row];
        row.counts.saves += 1;
        row.chunked.uploaded += uploaded;
        row.chunked.dedup_saved += self.model.compressed(n - answer.missing.len());
        row.archive.uploaded += self.model.compressed(n);
        row.timing.kiln_save_ms += millis(raw, self.speeds.kiln_save);
        row.timing.archive_save_ms += millis(raw, self.speeds.archive_save);
        let (set, entries) = &mut self.saved_by_row[save.row];
        set.extend(content.iter().copied());
        *entries += 1;
        self.last_content.insert(save.label.clone(), content);
        Ok(("saved", uploaded))
    }

    fn finish(mut self) -> (Totals, Vec<StepReport>, Vec<CommitReport>) {
        let mut totals = Totals::default();
        let mut all = HashSet::new();
        for (row, (set, entries)) in self.rows.iter_mut().zip(&self.saved_by_row) {
            row.chunked.stored = self.model.compressed(set.len());
            row.archive.stored = *entries * self.model.compressed(self.model.chunks());
            row.counts.finish();
            all.extend(set.iter().copied());
            totals.counts.add(&row.counts);
            for (t, r) in [
                (&mut totals.chunked, &row.chunked),
                (&mut totals.archive, &row.archive),
            ] {
                t.uploaded += r.uploaded;
                t.downloaded += r.downloaded;
                t.dedup_saved += r.dedup_saved;
                t.stored += r.stored;
            }
            totals.timing.kiln_restore_ms += row.timing.kiln_restore_ms;
            totals.timing.kiln_save_ms += row.timing.kiln_save_ms;
            totals.timing.archive_restore_ms += row.timing.archive_restore_ms;
            totals.timing.archive_save_ms += row.timing.archive_save_ms;
        }
        // Steps share chunks in one store: the total is the union, not the sum.
        totals.chunked.stored = self.model.compressed(all.len());
        totals.counts.finish();
        (totals, self.rows, self.commits)
    }
}

/// Everything one replay needs besides the runs.
pub struct ReplaySetup<'a> {
    pub objects: &'a Objects,
    pub cwd: String,
    pub repository: String,
    pub model: ContentModel,
    pub speeds: Speeds,
    pub store_dir: &'a Path,
}

/// Replays `runs` into a fresh store under `setup.store_dir`; `key_override` replaces every
/// step's primary key (`--compare-key`).
pub fn replay_runs(
    setup: &ReplaySetup<'_>,
    runs: &[Run],
    workflows: &Workflows,
    key_override: Option<Param>,
) -> Result<(Totals, Vec<StepReport>, Vec<CommitReport>)> {
    let mut config = StoreConfig::new(setup.store_dir);
    config.max_size = u64::MAX;
    let store = CacheStore::open(config)?;
    let mut replay = Replay {
        objects: setup.objects,
        cwd: setup.cwd.clone(),
        repository: setup.repository.clone(),
        store,
        model: setup.model.clone(),
        speeds: setup.speeds.clone(),
        key_override,
        fresh: HashMap::new(),
        next_chunk: 0,
        last_content: HashMap::new(),
        last_key: HashMap::new(),
        rows: Vec::new(),
        row_of: HashMap::new(),
        family_of: HashMap::new(),
        saved_by_row: Vec::new(),
        commits: Vec::new(),
    };
    let mut cache = WorkflowCache {
        parsed: HashMap::new(),
    };
    for (i, run) in runs.iter().enumerate() {
        let (defs, skipped) = match workflows {
            Workflows::Fixed(defs) => (defs.clone(), Vec::new()),
            Workflows::OfEachCommit => cache.defs(setup.objects, &run.commit.tree)?,
        };
        replay.run(run, i as u64 + 1, &defs, skipped)?;
    }
    replay.store.flush_durability();
    Ok(replay.finish())
}
