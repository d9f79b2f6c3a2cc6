//! The integration tests, one binary (linked once): one module per area, one support module.
//! Run one area with `cargo test --test it cli_commands::` (or `cargo nextest run -E
//! 'test(/^cli_commands::/)'`).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests drive the binary and other processes, and panic on what they did not expect"
)]

mod support;

mod agent_budgets;
mod agent_command;
mod agent_middleware;
mod agent_prompts;
mod agent_sim_quirks;
mod agent_templates;
mod ci_recipe;
mod cli_commands;
mod cli_figures;
mod cli_noise;
mod cli_split_init;
mod cli_user_repo;
mod docker_api_calls;
mod docker_hosts;
mod docker_overlay;
mod docker_pull;
mod docker_registry;
mod docker_strays;
mod docker_tls;
mod eval_cache;
mod eval_crash;
mod eval_infra;
mod eval_secrets;
mod eval_signals;
mod formats;
mod gate_evidence;
mod gate_flaky;
mod gate_rules;
mod gate_sequential;
mod gate_settle;
mod gate_stats;
mod image_map_patterns;
mod import_harbor;
mod kubernetes;
mod kubernetes_gateway;
mod lineage_git;
mod loop_aa;
mod loop_bisect;
mod loop_demo;
mod loop_flaky;
mod loop_noisy_gate;
mod loop_null_control;
mod loop_promote;
mod loop_revalidate;
mod loop_sealed;
mod loop_user_repo;
mod mine_demo;
mod mine_signature;
mod model_anthropic;
mod model_openai;
mod network_phases;
mod promote;
mod propose_audit;
mod propose_refusals;
mod regrade;
mod report;
mod report_markdown;
mod runner_auto;
mod sandbox_attacks;
mod sandbox_attacks_docker;
mod sandbox_docker;
mod sandbox_local;
mod small_suites;
mod task_load;
mod tasks_check_setup;
mod verifier_image;
mod verifier_separate;
