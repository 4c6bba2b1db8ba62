//! All-in-one evidence: the fsync'd spool the ingress appends to, and the
//! in-process archiver that turns it into signed segments under
//! `<evidence.dir>/archive` — the same layout the S3 sink writes, so `gatehouse
//! verify`, `replay` and `sessions list` read either.
//!
//! A spool file is deleted once every record in it is in a sealed segment. At
//! start, spool files an earlier process left (it crashed, or was stopped before
//! its open segments were due) are archived first; records already archived are
//! recognised and not written twice.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use gatehouse_archiver::{
    Archive, Ingested, LocalDir, RecordId, Segmenter, SegmenterConfig, load_signing_key,
    new_writer_id,
};
use gatehouse_ingress::evidence::{Recorder, Spool, SpoolBatch, spool_files};
use gatehouse_schemas::siem::SiemRecord;

use crate::config::{EvidenceConfig, SiemOutputConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Spool files rotate at this size.
const SPOOL_ROTATE: u64 = 64 << 20;
/// How often due segments are sealed.
const TICK: Duration = Duration::from_millis(500);

/// The evidence pipeline of a running gateway.
pub struct Evidence {
    /// What sessions record to; `None` when evidence is off.
    pub recorder: Option<Arc<Recorder>>,
    archiver: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Evidence {
    /// Clean shutdown, after the sessions have stopped: waits for queued records
    /// to be durable, then (local mode) archives and seals everything spooled,
    /// so the archive is complete without a recovery at the next start.
    pub async fn close(self) {
        if let Some(r) = &self.recorder
            && let Err(e) = r.drain().await
        {
            tracing::error!(error = %e, "evidence_drain_failed");
        }
        if let Some((stop, task)) = self.archiver {
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::error!(error = %e, "evidence_archiver_failed");
            }
        }
    }
}

/// Recovers what an earlier run left, then starts the spool, its recorder and the
/// archiver task.
pub async fn start(cfg: &EvidenceConfig) -> Result<Evidence> {
    let (dir, key_path) = cfg.local_paths()?;
    let dir = dir.to_path_buf();
    let key = load_signing_key(key_path)
        .with_context(|| format!("evidence signing key {}", key_path.display()))?;
    let segmenter = Segmenter::new(
        SegmenterConfig {
            max_age: cfg.segment_max_age,
            ..SegmenterConfig::default()
        },
        new_writer_id(),
        key,
    );
    let mut archive = Archive::new(LocalDir::new(dir.join("archive")), segmenter);
    let mut siem = cfg.siem.as_ref().map(SiemOut::open).transpose()?;
    let spool_dir = dir.join("spool");
    recover(&mut archive, &spool_dir, siem.as_mut()).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let spool = Spool::open(&dir, SPOOL_ROTATE, Some(tx))
        .with_context(|| format!("open the evidence spool in {}", dir.display()))?;
    let recorder = Recorder::start(spool, cfg.timeout, cfg.max_backlog_bytes);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(archive_loop(archive, rx, stopped, spool_dir, siem));
    tracing::info!(dir = %dir.display(), "evidence_local");
    Ok(Evidence {
        recorder: Some(recorder),
        archiver: Some((stop, task)),
    })
}

/// Archives every record of the spool files left by an earlier run, seals
/// everything, and deletes those files.
async fn recover(
    archive: &mut Archive<LocalDir>,
    spool_dir: &Path,
    mut siem: Option<&mut SiemOut>,
) -> Result<()> {
    let files = spool_files(spool_dir)?;
    if files.is_empty() {
        return Ok(());
    }
    let now = SystemTime::now();
    let mut records = 0usize;
    for (_, path) in &files {
        let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // A torn last line (a crash mid-write, never acknowledged) is not
            // an event; it is logged and skipped.
            match archive.ingest(line, now).await {
                Ok(ingested) => {
                    records += 1;
                    // Not archived before the stop: not shipped either, or
                    // shipped just before a crash (readers deduplicate on
                    // metadata.uid).
                    if let (Ingested::Pending, Some(out)) = (ingested, siem.as_deref_mut()) {
                        out.write([line]);
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "spool_record_skipped")
                }
            }
        }
    }
    archive
        .flush()
        .await
        .context("archive the recovered spool")?;
    for (_, path) in &files {
        std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
    }
    tracing::info!(files = files.len(), records, "evidence_spool_recovered");
    Ok(())
}

async fn archive_loop(
    mut archive: Archive<LocalDir>,
    mut rx: mpsc::UnboundedReceiver<SpoolBatch>,
    mut stop: oneshot::Receiver<()>,
    spool_dir: PathBuf,
    mut siem: Option<SiemOut>,
) {
    // Which spool file holds each record not yet archived, and how many each
    // file still has.
    let mut home: HashMap<RecordId, u64> = HashMap::new();
    let mut outstanding: BTreeMap<u64, usize> = BTreeMap::new();
    let mut current = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let archived = tokio::select! {
            // The gateway is stopping (its records are durable, so every batch
            // is in the channel): archive them, seal what is open. The spool
            // files go at the next start, once recovery finds them archived.
            _ = &mut stop => {
                while let Ok(batch) = rx.try_recv() {
                    if let Some(out) = siem.as_mut() {
                        out.write(batch.records.iter().map(|r| &r.bytes[..]));
                    }
                    for r in batch.records {
                        if let Err(e) = archive.ingest(&r.bytes, SystemTime::now()).await {
                            tracing::error!(error = %e, "evidence_archive_ingest_failed");
                        }
                    }
                }
                match archive.flush().await {
                    Ok(ids) => tracing::info!(records = ids.len(), "evidence_archive_flushed"),
                    Err(e) => tracing::error!(error = %e, "evidence_archive_flush_failed"),
                }
                return;
            }
            batch = rx.recv() => {
                let Some(batch) = batch else {
                    if let Err(e) = archive.flush().await {
                        tracing::error!(error = %e, "evidence_archive_flush_failed");
                    }
                    return;
                };
                if let Some(out) = siem.as_mut() {
                    out.write(batch.records.iter().map(|r| &r.bytes[..]));
                }
                current = current.max(batch.file);
                outstanding.entry(batch.file).or_insert(0);
                let now = SystemTime::now();
                for r in batch.records {
                    match archive.ingest(&r.bytes, now).await {
                        Ok(Ingested::Pending) => {
                            let id = RecordId { session: r.session, seq: r.seq };
                            if home.insert(id, batch.file).is_none() {
                                *outstanding.entry(batch.file).or_insert(0) += 1;
                            }
                        }
                        Ok(Ingested::Archived) => {}
                        Err(e) => tracing::error!(error = %e, "evidence_archive_ingest_failed"),
                    }
                }
                continue;
            }
            _ = tick.tick() => archive.tick(SystemTime::now()).await,
        };
        match archived {
            Ok(ids) => {
                for id in ids {
                    if let Some(file) = home.remove(&id)
                        && let Some(n) = outstanding.get_mut(&file)
                    {
                        *n = n.saturating_sub(1);
                    }
                }
                // Files before the one being written, all archived: gone.
                let done: Vec<u64> = outstanding
                    .iter()
                    .filter(|&(&f, &n)| f < current && n == 0)
                    .map(|(&f, _)| f)
                    .collect();
                for f in done {
                    outstanding.remove(&f);
                    let path = gatehouse_ingress::evidence::spool_path(&spool_dir, f);
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(file = %path.display(), error = %e, "spool_remove_failed");
                    }
                }
            }
            // The store failed; the segments stay pending and are retried at the
            // next tick, and the spool keeps their records meanwhile.
            Err(e) => tracing::error!(error = %e, "evidence_archive_failed"),
        }
    }
}

/// `[evidence] siem`: the OCSF record of every durable event, one JSON line
/// each, for a log shipper. Written once the record is durable (what a SIEM
/// sees happened), flushed per batch; a write that fails is logged, never
/// holds up a statement (the signed archive remains the evidence).
struct SiemOut {
    out: Box<dyn std::io::Write + Send>,
    target: String,
}

impl SiemOut {
    fn open(cfg: &SiemOutputConfig) -> Result<Self> {
        let target = cfg.ndjson.display().to_string();
        let out: Box<dyn std::io::Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cfg.ndjson)
                .with_context(|| format!("open the SIEM output {target} ([evidence] siem)"))?;
            Box::new(file)
        };
        tracing::info!(target = %target, "evidence_siem_ndjson");
        Ok(Self { out, target })
    }

    fn write<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) {
        let mut buf = Vec::new();
        for r in records {
            let Ok(text) = std::str::from_utf8(r) else {
                continue;
            };
            match SiemRecord::from_record(text) {
                Ok(rec) => {
                    serde_json::to_writer(&mut buf, &rec).expect("records serialize");
                    buf.push(b'\n');
                }
                Err(e) => tracing::warn!(error = %e, "evidence_siem_record_skipped"),
            }
        }
        if buf.is_empty() {
            return;
        }
        if let Err(e) = self.out.write_all(&buf).and_then(|()| self.out.flush()) {
            tracing::error!(target = %self.target, error = %e, "evidence_siem_write_failed");
        }
    }
}

/// The evidence pipeline `evidence.mode` asks for.
pub async fn recorder(cfg: &crate::config::Config) -> Result<Evidence> {
    use crate::config::EvidenceMode;
    use gatehouse_ingress::evidence::{JetStream, ensure_stream};
    let ev = &cfg.evidence;
    match ev.mode {
        EvidenceMode::Off => {
            tracing::warn!(
                "evidence_off: statements run UNRECORDED (evidence.mode = \"off\"); never in production"
            );
            Ok(Evidence {
                recorder: None,
                archiver: None,
            })
        }
        EvidenceMode::Local => start(ev).await,
        EvidenceMode::Jetstream => {
            // No retry on the first connect: a gateway that cannot record starts
            // no sessions at all.
            let client = async_nats::ConnectOptions::new()
                .name("gatehouse-ingress-evidence")
                .connect(cfg.nats.url.as_str())
                .await
                .with_context(|| {
                    format!("connect to NATS at {} for evidence", cfg.nats.shown_url())
                })?;
            let js = async_nats::jetstream::new(client);
            ensure_stream(&js)
                .await
                .context("create the JetStream evidence stream")?;
            tracing::info!(url = %cfg.nats.shown_url(), "evidence_jetstream");
            Ok(Evidence {
                recorder: Some(Recorder::start(
                    JetStream::new(js),
                    ev.timeout,
                    ev.max_backlog_bytes,
                )),
                archiver: None,
            })
        }
    }
}
