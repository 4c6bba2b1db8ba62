//! `serve --role archiver`: the shared config's `[archiver]` section turned into
//! the archiver service (JetStream evidence into Kafka and signed segments).

use std::sync::Arc;

use anyhow::{Context, Result};
use gatehouse_archiver::config::ArchiverStore;
use gatehouse_archiver::kafka::{KafkaSettings, KafkaSink};
use gatehouse_archiver::service::{self, Reconnects, ServiceSettings, Stats};
use gatehouse_archiver::{
    Archive, LocalDir, S3Store, Segmenter, SegmenterConfig, load_signing_key, new_writer_id,
};

use crate::config::Config;

/// Runs the archiver until `shutdown` resolves.
pub async fn serve(cfg: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let a = &cfg.archiver;
    let (key_path, store) = a.store()?;
    let key = load_signing_key(key_path)
        .with_context(|| format!("archiver signing key {}", key_path.display()))?;
    let writer = new_writer_id();
    let segmenter = Segmenter::new(
        SegmenterConfig {
            max_age: a.segment_max_age,
            max_events: a.segment_max_events,
            ..SegmenterConfig::default()
        },
        writer.clone(),
        key,
    );
    let kafka = if a.kafka.enabled {
        Some(KafkaSink::new(KafkaSettings {
            brokers: a.kafka.brokers.clone(),
            topic: a.kafka.topic.clone(),
            delivery_timeout: a.kafka.delivery_timeout,
            scan_margin: a.kafka.scan_margin,
            properties: a.kafka.properties.clone().into_iter().collect(),
        })?)
    } else {
        tracing::warn!("archiver_kafka_disabled: evidence goes to segments only");
        None
    };
    let settings = ServiceSettings {
        fetch_batch: a.fetch_batch,
        max_inflight: a.max_inflight,
        ack_wait: a.ack_wait,
        max_ack_pending: a.max_ack_pending,
        ..ServiceSettings::default()
    };
    let reconnects = Reconnects::default();
    let events = reconnects.clone();
    let client = async_nats::ConnectOptions::new()
        .name("gatehouse-archiver")
        .retry_on_initial_connect()
        .event_callback(move |event| {
            events.on_event(&event);
            async {}
        })
        .connect(cfg.nats.url.as_str())
        .await
        .with_context(|| format!("connect to NATS at {}", cfg.nats.shown_url()))?;
    let js = async_nats::jetstream::new(client);
    gatehouse_ingress::evidence::ensure_stream(&js)
        .await
        .context("create the JetStream evidence stream")?;
    let stats = Arc::new(Stats::default());
    match store {
        ArchiverStore::Local(dir) => {
            tracing::info!(writer = %writer, dir = %dir.display(), "archiver_store_local");
            let archive = Archive::new(LocalDir::new(dir), segmenter);
            service::run(js, archive, kafka, settings, reconnects, stats, shutdown).await?;
        }
        ArchiverStore::S3(s3) => {
            let store = S3Store::connect(&s3)
                .await
                .with_context(|| format!("S3 bucket {}", s3.bucket))?;
            tracing::info!(writer = %writer, store = %store, "archiver_store_s3");
            let archive = Archive::new(store, segmenter);
            service::run(js, archive, kafka, settings, reconnects, stats, shutdown).await?;
        }
    }
    Ok(())
}
