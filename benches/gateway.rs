//! The model gateway's cost: per-request latency (p50/p99) of direct calls to a stand-in
//! OpenAI-compatible server against the same calls through the gateway, and whole command-harness
//! trials per second through it (a local sandbox, bubblewrap when available, whose agent makes
//! three requests with curl) at concurrency 1, 2 and 8.
//!
//! `cargo bench --profile dev --bench gateway`. N from BENCH_N (requests, default 400; trials
//! are N/20 per concurrency level). Prints figures; asserts nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use git_harness::agent::EpisodeSpec;
use git_harness::experiment::{Budgets, DecodingConfig, Prices};
use git_harness::gateway::{Gateway, Pin, SessionSpec};
use git_harness::harness::Harness;
use git_harness::model::openai::OpenAiModel;
use git_harness::model::{Model, RetryPolicy};
use git_harness::sandbox::{self, Bwrap, ProviderOptions, SandboxProvider};
use serde_json::{Value, json};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn stand_in() -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            axum::Json(json!({
                "id": "x", "object": "chat.completion", "model": "stub",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1}
            }))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/v1")
}

async fn latencies(client: &reqwest::Client, url: &str, token: &str, n: usize) -> Vec<f64> {
    let body = json!({"model": "stub", "messages": [{"role": "user", "content": "hi"}]});
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let v: Value = r.json().await.expect("json");
        assert!(v["choices"].is_array(), "{v}");
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out
}

fn trivial_task(dir: &std::path::Path) -> git_harness::task::Task {
    let t = dir.join("trivial");
    std::fs::create_dir_all(t.join("environment/workspace")).expect("mkdir");
    std::fs::create_dir_all(t.join("tests")).expect("mkdir");
    std::fs::write(t.join("instruction.md"), "Nothing to do.").expect("write");
    std::fs::write(t.join("environment/workspace/README"), "x").expect("write");
    std::fs::write(
        t.join("tests/test.sh"),
        "#!/bin/bash\necho 1 > \"$HARNESS_LOGS_DIR/verifier/reward.txt\"\n",
    )
    .expect("write");
    git_harness::task::load_task(&t).expect("trivial task loads")
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    git_harness::gateway::set_helper_binary(env!("CARGO_BIN_EXE_git-harness").into());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let base = stand_in().await;
        let model: Arc<dyn Model> = Arc::new(
            OpenAiModel::new(&base, "stub", None, RetryPolicy::default()).expect("client"),
        );
        let pin = Pin::new(model.as_ref(), &DecodingConfig::default(), &Prices::default());
        let gw = Arc::new(Gateway::start(model.clone(), pin).await.expect("gateway"));
        let client = reqwest::Client::new();
        let warm = n / 10 + 1;
        let session = gw.open(SessionSpec {
            budgets: Budgets {
                max_turns: u32::MAX,
                max_tokens: u64::MAX,
                ..Budgets::default()
            },
            seed: 1,
            deadline: None,
        });
        let via = format!("http://{}/v1/chat/completions", gw.addr());
        let direct = format!("{base}/chat/completions");
        latencies(&client, &direct, "x", warm).await;
        latencies(&client, &via, session.token(), warm).await;
        let mut d = latencies(&client, &direct, "x", n).await;
        let mut g = latencies(&client, &via, session.token(), n).await;
        drop(session);
        let (d50, d99, g50, g99) = (
            pct(&mut d, 0.5),
            pct(&mut d, 0.99),
            pct(&mut g, 0.5),
            pct(&mut g, 0.99),
        );
        println!("gateway overhead per request ({n} sequential requests, loopback stand-in)");
        println!("  direct          p50 {d50:7.3} ms   p99 {d99:7.3} ms");
        println!("  via gateway     p50 {g50:7.3} ms   p99 {g99:7.3} ms");
        println!(
            "  overhead        p50 {:7.3} ms   p99 {:7.3} ms",
            g50 - d50,
            g99 - d99
        );

        let bwrap = sandbox::local::bwrap_available();
        let provider: Arc<dyn SandboxProvider> = sandbox::provider(
            &Default::default(),
            &ProviderOptions {
                bwrap: if bwrap { Bwrap::Always } else { Bwrap::Never },
                ..Default::default()
            },
        )
        .expect("provider");
        let dir = tempfile::tempdir().expect("tempdir");
        let task = Arc::new(trivial_task(dir.path()));
        let agent = "for i in 1 2 3; do curl -sf -H \"Authorization: Bearer $OPENAI_API_KEY\" \
                     -d \"{\\\"model\\\":\\\"$HARNESS_MODEL\\\",\\\"messages\\\":[{\\\"role\\\":\\\"user\\\",\\\"content\\\":\\\"hi\\\"}]}\" \
                     \"$OPENAI_BASE_URL/chat/completions\" >/dev/null || exit 1; done";
        let manifest = format!(
            "name: bench\nprotocol: command\nagent:\n  command: '{}'\nsurfaces:\n  - path: agent.sh\n    kind: file\n",
            agent.replace('\'', "''")
        );
        let files: BTreeMap<String, String> = [
            ("harness.yaml".to_string(), manifest),
            ("agent.sh".to_string(), "true\n".to_string()),
        ]
        .into_iter()
        .collect();
        let harness = Arc::new(Harness::from_files(files).expect("harness"));
        let trials = (n / 20).max(8);
        println!(
            "command-harness trials through the gateway ({trials} per level, local {}, 3 requests each)",
            if bwrap { "bubblewrap" } else { "plain" }
        );
        for conc in [1usize, 2, 8] {
            let sem = Arc::new(tokio::sync::Semaphore::new(conc));
            let t = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..trials {
                let (sem, gw, provider, task, harness, model) = (
                    sem.clone(),
                    gw.clone(),
                    provider.clone(),
                    task.clone(),
                    harness.clone(),
                    model.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let _p = sem.acquire().await.expect("permit");
                    let mut sb = provider.create(&task).await.expect("sandbox");
                    let budgets = Budgets {
                        wall_clock_sec: 60,
                        ..Budgets::default()
                    };
                    let spec = EpisodeSpec {
                        task_id: "trivial",
                        trial: i as u32,
                        seed: 1,
                        instruction: "Nothing to do.",
                        harness: &harness,
                        budgets: &budgets,
                        decoding: &DecodingConfig::default(),
                        prices: &Prices::default(),
                        cancel: None,
                    };
                    let ep = git_harness::agent::command::run_command_episode(
                        &spec,
                        sb.as_ref(),
                        &gw,
                        model.as_ref(),
                        &[],
                    )
                    .await
                    .expect("episode");
                    let _ = sb.destroy().await;
                    assert_eq!(ep.trace.totals.turns, 3, "{:?}", ep.trace.command);
                }));
            }
            for t in tasks {
                t.await.expect("trial");
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "  concurrency {conc}:  {:6.2} trials/s  ({:5.0} ms per trial wall)",
                trials as f64 / secs,
                secs * 1e3 / trials as f64
            );
        }
    });
}
