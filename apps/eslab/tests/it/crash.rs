//! Process crash: `kill -9` of a real `eslab serve` process (PostgreSQL
//! backend) in the middle of a load of deposits. After a restart, every
//! deposit that got a 2xx is in the store exactly once, retries of every
//! deposit with its idempotency key (acknowledged or not) add nothing twice,
//! and the read model converges to the fold of the events (after the killed
//! process's projection lease runs out).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use eslab_testing::pg::FreshSchema;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ServeProcess, free_port};

async fn start(schema: &FreshSchema, port: u16) -> ServeProcess {
    let mut command = ServeProcess::command();
    command
        .arg("serve")
        .env("DATABASE_URL", schema.url())
        .env("ESLAB_SCHEMA", schema.name())
        .env("ESLAB_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ServeProcess::start(command, port, "is PostgreSQL running? `make ensure-postgres` starts it").await
}

async fn deposit(client: &reqwest::Client, base: &str, account: &str, key: &str) -> Option<StatusCode> {
    let sent = client
        .post(format!("{base}/accounts/{account}/deposits"))
        .header("Idempotency-Key", key)
        .json(&json!({"amount": 100, "currency": "EUR"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    sent.ok().map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acknowledged_deposit_and_retries_add_nothing_twice() {
    let schema = FreshSchema::new("eslab_crash");
    let port = free_port();
    let server = start(&schema, port).await;
    let client = reqwest::Client::new();

    let mut accounts = Vec::new();
    for n in 0..8 {
        let r = client
            .post(format!("{}/accounts", server.base))
            .json(&json!({"owner": format!("crash {n}"), "currency": "EUR"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        accounts.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }

    // 8 clients deposit with fresh keys until the server dies under them.
    let mut load = tokio::task::JoinSet::new();
    for (n, account) in accounts.iter().enumerate() {
        let (client, base, account) = (client.clone(), server.base.clone(), account.clone());
        load.spawn(async move {
            let mut sent: Vec<(String, Option<StatusCode>)> = Vec::new();
            for i in 0..10_000 {
                let key = format!("crash-{n}-{i}");
                let status = deposit(&client, &base, &account, &key).await;
                sent.push((key, status));
                if status.is_none() {
                    break; // the server is gone
                }
            }
            (account, sent)
        });
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill();
    let mut sent: BTreeMap<String, Vec<(String, Option<StatusCode>)>> = BTreeMap::new();
    while let Some(done) = load.join_next().await {
        let (account, keys) = done.unwrap();
        sent.insert(account, keys);
    }
    let acknowledged: usize = sent.values().flatten().filter(|(_, s)| s.is_some_and(|s| s.is_success())).count();
    assert!(acknowledged > 0, "no deposit was acknowledged before the kill");

    // Restart on the same schema; retry every deposit with its key.
    let server = start(&schema, port).await;
    for (account, keys) in &sent {
        for (key, _) in keys {
            let status = deposit(&client, &server.base, account, key).await;
            assert!(status.is_some_and(|s| s.is_success()), "retry of {key} after the restart: {status:?}");
        }
    }

    // Each key took effect exactly once: balance and version in the store.
    // The read model converges once the new process's projection runner
    // holds the lease the killed one left behind (a 30 s lease): allow 75 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    for (account, keys) in &sent {
        let r = client.get(format!("{}/accounts/{account}?consistency=strong", server.base)).send().await.unwrap();
        let strong: Value = r.json().await.unwrap();
        let deposits = i64::try_from(keys.len()).unwrap();
        assert_eq!(strong["balance"], json!(100 * deposits), "account {account}: {strong}");
        assert_eq!(strong["version"], json!(1 + deposits), "account {account}: {strong}");
        // The read model converges to the same.
        let mut converged = false;
        while tokio::time::Instant::now() < deadline {
            let view: Value =
                client.get(format!("{}/accounts/{account}", server.base)).send().await.unwrap().json().await.unwrap();
            if view["version"] == strong["version"] && view["balance"] == strong["balance"] {
                converged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(converged, "the read model of {account} never reached {strong}");
    }
    server.kill();
    schema.drop_schema().await;
}
