//! The routing core's cost: running a workstream's rules, and a conversation's whole life
//! in the engine (start → bot → escalation → agent → close).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard::config::Config;
use switchboard::context::{Context, Value};
use switchboard::routing::{ConvId, Engine};

fn routing(c: &mut Criterion) {
    let cfg = Config::builtin_default();
    let ws = cfg.workstream("ChatWorkStream").unwrap().clone();
    let mut ctx = Context::new();
    ctx.insert("BotHandoffTopic".into(), Value::Text("HomeLoan".into()));
    c.bench_function("rules/third_rule_matches", |b| b.iter(|| black_box(ws.route(black_box(&ctx)))));

    c.bench_function("engine/conversation_lifecycle", |b| {
        let mut engine = Engine::new(&cfg);
        for m in ["contoso-bot", "alice", "bob", "carol"] {
            engine.set_online(m, true, 0).unwrap();
        }
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let id: ConvId = Arc::from(format!("c{n}"));
            engine.start(id.clone(), "ChatWorkStream", Context::new(), n).unwrap();
            let vars = vec![("BotHandoffTopic".to_owned(), Some(Value::Text("CreditCard".into())))];
            engine.escalate(&id, vars, n).unwrap();
            black_box(engine.close(&id));
            engine.forget(&id);
        })
    });
}

criterion_group!(benches, routing);
criterion_main!(benches);
