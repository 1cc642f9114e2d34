//! The replay loop: for each run, oldest first, every job leg's cache steps run in step order.
//! A step's key is evaluated over the commit's tree, looked up in a real kiln cache store with
//! the run's readable scopes (exact key, prefixes, restore keys, scope by scope, as the server
//! does for a job), and saved into the run's own scope as the step would: `actions/cache/save`
//! at its place, `actions/cache` and `setup-*` in the job's post phase (in reverse step order)
//! unless the primary key hit exactly. Entries are write-once: a key already saved in the
//! scope is a conflict, as on GitHub.

use crate::content::{millis, real_chunks, ContentModel, Speeds};
use crate::error::{BenchError, Result};
use crate::history::Run;
use crate::report::{Bytes, CommitReport, KeyChange, StepOutcome, StepReport, Timing, Totals};
use crate::steps::StepOutputs;
use crate::steps::{discover, steps_context, CacheKind, CacheStepDef, EvaluatedKey, RunFacts};
use crate::tree::{CommitTree, Objects};
use kiln_cache::client::tree_version;
use kiln_cache::digest::{ChunkRef, Digest};
use kiln_cache::index::{EntryKind, MatchKind, Reservation};
use kiln_cache::{CacheError, CacheStore, StoreConfig};
use kiln_workflow::model::Param;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Where a run's cache steps come from.
pub enum Workflows {
    /// Each commit's own `.github/workflows/*.yml`.
    OfEachCommit,
    /// One workflow (`-W`) applied to every commit.
    Fixed(Vec<CacheStepDef>),
}

/// Reads and parses workflow files of a commit, once per blob.
#[derive(Default)]
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

/// `--compare-key`: another primary key for the steps `step` names (every step when None).
#[derive(Clone, Debug)]
pub struct KeyOverride {
    pub key: Param,
    pub step: Option<String>,
}

/// Accumulates one replay.
struct Replay<'a> {
    objects: &'a Objects,
    cwd: String,
    repository: String,
    store: CacheStore,
    model: ContentModel,
    speeds: Speeds,
    key_override: Option<KeyOverride>,
    /// Synthetic chunks: their counter, whose bytes the store holds for them.
    synthetic: HashMap<Digest, u64>,
    next_chunk: u64,
    /// Raw and compressed size of every chunk the replay saved.
    sizes: HashMap<Digest, (u64, u64)>,
    /// Real chunks already computed for a list of blobs (the same files under another key).
    real: HashMap<Vec<String>, Arc<Vec<(Digest, u64, u64)>>>,
    last_content: HashMap<String, Vec<Digest>>,
    last_key: HashMap<(String, String), EvaluatedKey>,
    rows: Vec<StepReport>,
    row_of: HashMap<(String, String), usize>,
    family_of: HashMap<String, String>,
    /// Per row: every chunk its saves stored, its saves' archive sizes, and how many saves
    /// used real and modelled content.
    saved_by_row: Vec<RowStore>,
    commits: Vec<CommitReport>,
}

#[derive(Default)]
struct RowStore {
    chunks: HashSet<Digest>,
    archive_bytes: u64,
    real_saves: u64,
    modelled_saves: u64,
}

struct PendingSave {
    row: usize,
    label: String,
    key: String,
    version: String,
    /// `path:` lines: real content when the commit tracks them all.
    paths: Vec<String>,
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
            workflow: def.leg.workflow.clone(),
            job: def.leg.job.clone(),
            step: def.step.clone(),
            step_id: def.id.clone(),
            uses: def.uses.clone(),
            key_family: family.to_string(),
            content: "modelled".into(),
            counts: Default::default(),
            chunked: Bytes::default(),
            archive: Bytes::default(),
            timing: Timing::default(),
            key_changes: Vec::new(),
        });
        self.saved_by_row.push(RowStore::default());
        self.row_of.insert(id, self.rows.len() - 1);
        self.rows.len() - 1
    }

    fn def_for(&self, original: &CacheStepDef) -> CacheStepDef {
        match &self.key_override {
            Some(o) if o.step.as_deref().is_none_or(|s| original.is_named(s)) => {
                original.with_key(o.key.clone())
            }
            _ => original.clone(),
        }
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
            head_ref: run.head_ref.clone(),
        };
        let mut report = CommitReport {
            sha: run.commit.oid.clone(),
            subject: run.commit.subject.clone(),
            time: run.commit.time,
            scope: run.scope.clone(),
            steps: Vec::new(),
            skipped_workflows: skipped,
        };
        // The jobs of a run are replayed as if they ran at the same time: every leg's lookups
        // before any save, so legs sharing a key all miss and all but one save conflict, as
        // on GitHub. discover() lists a leg's steps together, in step order.
        let mut saves = Vec::new();
        for leg in defs.chunk_by(|a, b| Arc::ptr_eq(&a.leg, &b.leg)) {
            saves.extend(self.run_leg(leg, run, &tree, &facts, &mut report)?);
        }
        for save in saves {
            let (result, uploaded, whole) = self.save(&save, run, &tree)?;
            let step = &mut report.steps[save.outcome];
            step.save = Some(result.into());
            step.uploaded = uploaded;
            step.archive_uploaded = whole;
        }
        self.commits.push(report);
        Ok(())
    }

    fn run_leg(
        &mut self,
        defs: &[CacheStepDef],
        run: &Run,
        tree: &CommitTree<'_>,
        facts: &RunFacts,
        report: &mut CommitReport,
    ) -> Result<Vec<PendingSave>> {
        let mut outputs: Vec<(usize, StepOutputs)> = Vec::new();
        let mut saves = Vec::new();
        let mut post_saves = Vec::new();
        for original in defs {
            let def = self.def_for(original);
            let label = def.label();
            let steps = steps_context(&def.leg, def.index, &outputs);
            let evaluated = match def.evaluate(tree, facts, &steps) {
                Ok(Some(e)) => e,
                other => {
                    let family = self.family_of.get(&label).cloned().unwrap_or_default();
                    let row = self.row(&def, &family);
                    let counts = &mut self.rows[row].counts;
                    let (outcome, error) = match other {
                        Err(message) => {
                            counts.errors += 1;
                            ("error", Some(message))
                        }
                        _ => {
                            counts.skipped += 1;
                            ("skipped", None)
                        }
                    };
                    report.steps.push(StepOutcome {
                        step: row,
                        outcome: outcome.into(),
                        key: String::new(),
                        matched_key: None,
                        save: None,
                        uploaded: 0,
                        archive_uploaded: 0,
                        error,
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
                archive_uploaded: 0,
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
                        self.restored(row, &content);
                        base = Some(content);
                    }
                    None => {
                        counts.misses += 1;
                        outcome.outcome = "miss".into();
                    }
                }
                outputs.push((
                    def.index,
                    StepOutputs {
                        cache_hit: outcome.matched_key.as_ref().map(|_| exact),
                        primary_key: evaluated.key.clone(),
                        matched_key: outcome.matched_key.clone(),
                    },
                ));
            }
            report.steps.push(outcome);
            let save = PendingSave {
                row,
                label,
                key: evaluated.key,
                version,
                paths: evaluated.paths,
                base,
                outcome: report.steps.len() - 1,
            };
            match def.kind {
                CacheKind::Save => saves.push(save),
                CacheKind::Restore => {}
                CacheKind::Cache | CacheKind::Setup if !exact => post_saves.push(save),
                CacheKind::Cache | CacheKind::Setup => {}
            }
        }
        // Post steps run last, in reverse order.
        saves.extend(post_saves.into_iter().rev());
        Ok(saves)
    }

    fn compressed_of(&self, content: &[Digest]) -> (u64, u64) {
        content.iter().fold((0, 0), |(raw, packed), d| {
            let (r, p) = self
                .sizes
                .get(d)
                .copied()
                .unwrap_or((self.model.chunk, self.model.compressed(1)));
            (raw + r, packed + p)
        })
    }

    fn restored(&mut self, row: usize, content: &[Digest]) {
        let (raw, bytes) = self.compressed_of(content);
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
                let causes = key_change_causes(before, now);
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

    fn synthetic_chunk(&mut self) -> Digest {
        self.next_chunk += 1;
        let digest = Digest::of(&self.next_chunk.to_le_bytes());
        self.synthetic.insert(digest, self.next_chunk);
        self.sizes
            .insert(digest, (self.model.chunk, self.model.compressed(1)));
        digest
    }

    /// Modelled content of a save: what it started from with the model's churn applied.
    fn modelled_content(&mut self, save: &PendingSave) -> Vec<Digest> {
        let n = self.model.chunks();
        let base = save
            .base
            .clone()
            .filter(|b| b.iter().all(|d| self.synthetic.contains_key(d)))
            .or_else(|| self.last_content.get(&save.label).cloned());
        match base {
            Some(mut content) if !content.is_empty() => {
                // A model changed between saves (or an entry of another shape): fill or cut.
                content.truncate(n);
                while content.len() < n {
                    content.push(self.synthetic_chunk());
                }
                let changed = self.model.changed_chunks();
                // Which chunks change rotates from save to save.
                let start = (self.next_chunk as usize) % n;
                for i in 0..changed {
                    content[(start + i) % n] = self.synthetic_chunk();
                }
                content
            }
            _ => (0..n).map(|_| self.synthetic_chunk()).collect(),
        }
    }

    /// Real content when every path names tracked files: the chunks, and the encoded bytes of
    /// those computed now (the store may need them).
    fn real_content(
        &mut self,
        save: &PendingSave,
        tree: &CommitTree<'_>,
    ) -> Result<Option<(Vec<Digest>, HashMap<Digest, Vec<u8>>)>> {
        let mut blobs = Vec::new();
        let mut any = false;
        for line in &save.paths {
            match tree.tracked_files(line) {
                Some(files) => {
                    any = true;
                    blobs.extend(files.into_iter().map(|(_, blob)| blob));
                }
                None => return Ok(None),
            }
        }
        if !any {
            return Ok(None);
        }
        let mut encoded = HashMap::new();
        let chunks = match self.real.get(&blobs) {
            Some(known) => Arc::clone(known),
            None => {
                let mut list = Vec::new();
                for chunk in real_chunks(self.objects, &blobs)? {
                    let size = (chunk.raw, chunk.encoded.len() as u64);
                    self.sizes.insert(chunk.digest, size);
                    list.push((chunk.digest, size.0, size.1));
                    encoded.insert(chunk.digest, chunk.encoded);
                }
                let list = Arc::new(list);
                self.real.insert(blobs.clone(), Arc::clone(&list));
                list
            }
        };
        let digests = chunks.iter().map(|(d, _, _)| *d).collect();
        Ok(Some((digests, encoded)))
    }

    fn save(
        &mut self,
        save: &PendingSave,
        run: &Run,
        tree: &CommitTree<'_>,
    ) -> Result<(&'static str, u64, u64)> {
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
                return Ok(("conflict", 0, 0));
            }
            Err(e) => return Err(e.into()),
        };
        let (content, mut encoded, real) = match self.real_content(save, tree)? {
            Some((content, encoded)) => (content, encoded, true),
            None => (self.modelled_content(save), HashMap::new(), false),
        };
        let refs: Vec<ChunkRef> = content
            .iter()
            .map(|d| ChunkRef {
                digest: *d,
                len: self.sizes.get(d).map_or(8, |s| s.0 as u32),
            })
            .collect();
        let answer = self.store.missing_chunks(id, &refs, &run.reads)?;
        for digest in &answer.missing {
            let bytes = match (encoded.remove(digest), self.synthetic.get(digest)) {
                (Some(bytes), _) => bytes,
                (None, Some(counter)) => {
                    kiln_cache::chunks::encode_chunk(&counter.to_le_bytes(), 0)
                }
                (None, None) => {
                    return Err(BenchError::BadObject {
                        oid: digest.to_hex(),
                        reason: "the replay's store lost a chunk of an earlier save".into(),
                    })
                }
            };
            self.store.put_native_chunk(id, digest, &bytes)?;
        }
        let entry_raw: u64 = refs.iter().map(|r| u64::from(r.len)).sum();
        self.store.commit_native(id, entry_raw, &refs, &[])?;
        let missing: HashSet<Digest> = answer.missing.iter().copied().collect();
        let sent: Vec<Digest> = content
            .iter()
            .filter(|d| missing.contains(d))
            .copied()
            .collect();
        let (_, uploaded) = self.compressed_of(&sent);
        let (raw, whole) = self.compressed_of(&content);
        let row = &mut self.rows[save.row];
        row.counts.saves += 1;
        row.chunked.uploaded += uploaded;
        row.chunked.dedup_saved += whole - uploaded;
        row.archive.uploaded += whole;
        row.timing.kiln_save_ms += millis(raw, self.speeds.kiln_save);
        row.timing.archive_save_ms += millis(raw, self.speeds.archive_save);
        let store = &mut self.saved_by_row[save.row];
        store.chunks.extend(content.iter().copied());
        store.archive_bytes += whole;
        if real {
            store.real_saves += 1;
        } else {
            store.modelled_saves += 1;
        }
        self.last_content.insert(save.label.clone(), content);
        Ok(("saved", uploaded, whole))
    }

    fn finish(mut self) -> (Totals, Vec<StepReport>, Vec<CommitReport>) {
        let mut totals = Totals::default();
        let mut all = HashSet::new();
        let rows = std::mem::take(&mut self.rows);
        let mut out = Vec::with_capacity(rows.len());
        for (mut row, store) in rows.into_iter().zip(&self.saved_by_row) {
            let chunks: Vec<Digest> = store.chunks.iter().copied().collect();
            row.chunked.stored = self.compressed_of(&chunks).1;
            row.archive.stored = store.archive_bytes;
            row.content = match (store.real_saves, store.modelled_saves) {
                (0, _) => "modelled",
                (_, 0) => "real",
                _ => "mixed",
            }
            .into();
            row.counts.finish();
            all.extend(chunks);
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
            out.push(row);
        }
        // Steps share chunks in one store: the total is the union, not the sum.
        let all: Vec<Digest> = all.into_iter().collect();
        totals.chunked.stored = self.compressed_of(&all).1;
        totals.counts.finish();
        (totals, out, self.commits)
    }
}

/// Why a step's primary key changed: the files of its hashFiles() patterns that were added,
/// changed or removed, or `key expression` when those files are the same.
fn key_change_causes(before: &EvaluatedKey, now: &EvaluatedKey) -> Vec<String> {
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
    causes.dedup();
    if causes.is_empty() {
        causes.push("key expression".into());
    }
    causes
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

/// Replays `runs` into a fresh store under `setup.store_dir`; `key_override` replaces the
/// primary key of the steps it names (`--compare-key`).
pub fn replay_runs(
    setup: &ReplaySetup<'_>,
    runs: &[Run],
    workflows: &Workflows,
    key_override: Option<KeyOverride>,
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
        synthetic: HashMap::new(),
        next_chunk: 0,
        sizes: HashMap::new(),
        real: HashMap::new(),
        last_content: HashMap::new(),
        last_key: HashMap::new(),
        rows: Vec::new(),
        row_of: HashMap::new(),
        family_of: HashMap::new(),
        saved_by_row: Vec::new(),
        commits: Vec::new(),
    };
    let mut cache = WorkflowCache::default();
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
