//! The smoke workload: a few pushes and pulls whose answers are checked, timing nothing.
//!
//! It proves that both dialects are spoken correctly (the benchmark numbers mean nothing
//! otherwise): creates commit, a paged pull returns exactly what was written, an update on
//! the current version commits, a stale update and a second create are refused as conflicts
//! and change nothing, and an incremental pull returns just the change.

use anyhow::{bail, ensure, Context};
use serde_json::Value;

use crate::dialect::{Base, Dialect, PushOutcome, Record, Write};
use crate::http::Http;
use crate::payload::record_data;

/// Runs the smoke workload in a new collection named `collection`; returns what it checked.
pub async fn run(dialect: &Dialect, http: &Http, collection: &str) -> anyhow::Result<Vec<String>> {
    let mut checked = Vec::new();
    http.send_ok(&crate::http::Prepared::get(
        dialect.ready_path().to_string(),
    ))
    .await
    .context("the server is not up")?;
    dialect.prepare_server(http).await?;
    dialect.create_collection(http, collection).await?;

    let ids = ["a", "b", "c"];
    let first: Vec<String> = (0..3).map(|n| record_data(n, 0, 256)).collect();
    let writes: Vec<Write<'_>> = ids
        .iter()
        .zip(&first)
        .map(|(id, data)| Write {
            id,
            data,
            base: Base::Create,
        })
        .collect();
    let versions = match dialect.parse_push(
        &http
            .send(&dialect.prepare_push(collection, &writes))
            .await?,
        3,
    )? {
        PushOutcome::Committed(v) => v,
        PushOutcome::Conflict(ids) => bail!("creating three records conflicted on {ids:?}"),
    };
    ensure!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions of one push are not increasing: {versions:?}"
    );
    checked.push(format!(
        "three creates committed with versions {versions:?}"
    ));

    let pulled = dialect.pull_all(http, collection, 0, 2, true).await?;
    ensure!(
        pulled.pages >= 2,
        "a pull of 3 records with limit 2 took {} page(s)",
        pulled.pages
    );
    expect_records(
        &pulled.records,
        &[
            ("a", versions[0], &first[0]),
            ("b", versions[1], &first[1]),
            ("c", versions[2], &first[2]),
        ],
    )?;
    let cursor = pulled.cursor;
    checked.push(format!(
        "a paged pull ({} pages) returned the three records as written",
        pulled.pages
    ));

    let second = record_data(0, 1, 256);
    let update = [Write {
        id: "a",
        data: &second,
        base: Base::Version(versions[0]),
    }];
    let updated = match dialect.parse_push(
        &http
            .send(&dialect.prepare_push(collection, &update))
            .await?,
        1,
    )? {
        PushOutcome::Committed(v) => v[0],
        PushOutcome::Conflict(ids) => {
            bail!("an update on the current version conflicted on {ids:?}")
        }
    };
    ensure!(
        updated > versions[2],
        "the update's version {updated} is not after {versions:?}"
    );
    checked.push("an update on the current version committed".into());

    let stale_data = record_data(0, 2, 256);
    let stale = [Write {
        id: "a",
        data: &stale_data,
        base: Base::Version(versions[0]),
    }];
    match dialect.parse_push(
        &http.send(&dialect.prepare_push(collection, &stale)).await?,
        1,
    )? {
        PushOutcome::Conflict(ids) if ids == ["a"] => {}
        other => bail!("an update on a stale version was not refused: {other:?}"),
    }
    let again_data = record_data(1, 2, 256);
    let again = [Write {
        id: "b",
        data: &again_data,
        base: Base::Create,
    }];
    match dialect.parse_push(
        &http.send(&dialect.prepare_push(collection, &again)).await?,
        1,
    )? {
        PushOutcome::Conflict(ids) if ids == ["b"] => {}
        other => bail!("a second create of one id was not refused: {other:?}"),
    }
    checked.push("a stale update and a second create were refused as conflicts".into());

    let changes = dialect
        .pull_all(http, collection, cursor, 100, true)
        .await?;
    expect_records(&changes.records, &[("a", updated, &second)])?;
    checked.push("an incremental pull returned just the update".into());

    let all = dialect.pull_all(http, collection, 0, 100, true).await?;
    expect_records(
        &all.records,
        &[
            ("b", versions[1], &first[1]),
            ("c", versions[2], &first[2]),
            ("a", updated, &second),
        ],
    )?;
    checked.push("the refused writes changed nothing".into());

    dialect.delete_collection(http, collection).await?;
    Ok(checked)
}

/// Checks that `records` are exactly `expected` (id, version, data text), in order.
fn expect_records(records: &[Record], expected: &[(&str, u64, &String)]) -> anyhow::Result<()> {
    let got: Vec<(&str, u64)> = records.iter().map(|r| (r.id.as_str(), r.version)).collect();
    let want: Vec<(&str, u64)> = expected.iter().map(|(id, v, _)| (*id, *v)).collect();
    ensure!(got == want, "pulled {got:?}, expected {want:?}");
    for (record, (id, _, data)) in records.iter().zip(expected) {
        let sent: Value = serde_json::from_str(data)?;
        ensure!(!record.deleted, "record {id} came back deleted");
        ensure!(
            record.data.as_ref() == Some(&sent),
            "record {id} came back with other data: {:?}",
            record.data
        );
    }
    Ok(())
}
