//! What masking keeps of a session's named objects: a prepared statement's
//! mask plan and row shape, a portal's, a SQL cursor's, and what one
//! statement of a text does with rows that come without their own
//! description (a COPY, a cursor's DECLARE, FETCH or CLOSE).

use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use gatehouse_schemas::decision::CopyFormat;

use super::copy::ColMask;
use super::plan::MaskPlan;
use super::wire::Field;
use crate::protocol::codec;

/// What one statement of a text does with rows that arrive without their own
/// `RowDescription` (see `gatehouse_decider::results`).
#[derive(Debug, Clone, Default)]
pub enum Op {
    /// Nothing of the kind.
    #[default]
    None,
    /// `COPY ... TO STDOUT`, its columns learnt by a probe sent ahead of it.
    Copy {
        /// How its rows are written.
        format: CopyFormat,
        /// What the probe learns.
        probe: Arc<Probe>,
    },
    /// `DECLARE name CURSOR`: on success the cursor keeps this statement's plan.
    Declare {
        /// The cursor.
        name: String,
        /// `WITH HOLD`.
        hold: bool,
    },
    /// SQL `PREPARE name`: the statement was named with this statement's plan
    /// when the text was sent (and forgotten if it fails).
    Prepare {
        /// The statement.
        name: String,
    },
    /// `FETCH`: rows masked with the cursor's plan.
    Fetch {
        /// The cursor.
        name: String,
    },
    /// `CLOSE name` (`None`: all).
    Close(Option<String>),
}

/// What a probe (`Parse`/`Describe`/`Close` of a query with a COPY's output
/// columns, sent by the gateway ahead of the COPY) learnt: each column's mask.
#[derive(Debug, Default)]
pub struct Probe {
    /// Each column's mask, once described (`None` until then: all NULL).
    pub masks: Mutex<Option<Vec<ColMask>>>,
}

/// The reserved name of the probe statement; a client statement of that name
/// makes the probe fail, and the COPY's columns are then all NULL.
pub const PROBE_NAME: &str = "gatehouse_mask_probe";

/// A SQL cursor declared through the gateway.
#[derive(Debug)]
pub struct Cursor {
    /// The portal it is, with its query's plan (`None`: not masked): what a
    /// `FETCH` and an `Execute` of it are masked with.
    pub portal: Option<Arc<MaskedPortal>>,
    /// `WITH HOLD`: outlives its transaction once that commits.
    pub hold: bool,
    /// Its transaction committed.
    pub committed: bool,
}

impl Cursor {
    /// Its query's plan (`None`: not masked).
    pub fn plan(&self) -> Option<Arc<MaskPlan>> {
        self.portal.as_ref().map(|p| p.statement.plan.clone())
    }
}

/// A statement prepared with `Parse` (or SQL `PREPARE`) under a mask verdict.
#[derive(Debug)]
pub struct MaskedStatement {
    /// Its plan.
    pub plan: Arc<MaskPlan>,
    /// What it does with rows that come without a description.
    pub op: Op,
    /// Its row shape, from the answer to a `Describe` of it, with each field's
    /// column mask resolved.
    pub fields: Mutex<Option<Arc<Vec<Field>>>>,
}

impl MaskedStatement {
    /// A statement masked with `plan`.
    pub fn new(plan: Arc<MaskPlan>, op: Op) -> Arc<Self> {
        Arc::new(Self {
            plan,
            op,
            fields: Mutex::new(None),
        })
    }

    /// A statement the gateway does not know: masked by origin only, so a
    /// masking session's rows are all NULL.
    pub fn blind() -> Arc<Self> {
        Self::new(MaskPlan::blind(), Op::None)
    }
}

/// A portal bound to a masked statement.
#[derive(Debug)]
pub struct MaskedPortal {
    /// Its statement.
    pub statement: Arc<MaskedStatement>,
    /// Result format codes of the `Bind` (empty for a SQL cursor: the
    /// `Describe` of it says its format).
    pub formats: Vec<i16>,
    /// Its row shape, from the answer to a `Describe` of the portal.
    pub fields: Mutex<Option<Arc<Vec<Field>>>>,
}

impl MaskedPortal {
    /// A portal of `statement` bound with result `formats`.
    pub fn new(statement: Arc<MaskedStatement>, formats: Vec<i16>) -> Arc<Self> {
        Arc::new(Self {
            statement,
            formats,
            fields: Mutex::new(None),
        })
    }
}

/// Locks a mutex whose holder cannot leave it inconsistent (one assignment).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bytes of a probe: `Parse`, `Describe` and `Close` of `sql` under
/// [`PROBE_NAME`], and a `Sync` when `sync` (ahead of a simple query, so a
/// failed probe does not make the server skip the query).
pub fn probe_bytes(sql: &str, sync: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let mut msg = |tag: u8, body: &[&[u8]]| {
        let len: usize = body.iter().map(|b| b.len()).sum();
        out.put_u8(tag);
        out.put_u32(u32::try_from(len + 4).unwrap_or(u32::MAX));
        for b in body {
            out.put_slice(b);
        }
    };
    let name = [PROBE_NAME.as_bytes(), b"\0"].concat();
    msg(codec::PARSE, &[&name, sql.as_bytes(), b"\0", &[0, 0]]);
    msg(codec::DESCRIBE, &[b"S", &name]);
    msg(codec::CLOSE, &[b"S", &name]);
    if sync {
        msg(codec::SYNC, &[]);
    }
    out
}

/// A `Describe` of portal `name`.
pub fn describe_portal(name: &str) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(codec::DESCRIBE);
    out.put_u32(u32::try_from(name.len() + 6).unwrap_or(u32::MAX));
    out.put_u8(b'P');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out
}
