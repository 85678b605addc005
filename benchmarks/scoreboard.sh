#!/usr/bin/env bash
# The README's scoreboard (benchmarks/results/report/) from the per-task score benchmarks' committed results, until
# the three-seed grid (benchmarks/table2.py) has run. Files are listed oldest first: a later file's row replaces an
# earlier one's for the same task, algorithm and seed (the report lists each replacement).
set -euo pipefail
cd "$(dirname "$0")/.."
R=benchmarks/results
exec "${LMRL:-lmrl}" report \
  $R/maze_scores_fo.json $R/maze_scores_fo_ilql_8000_steps.json $R/maze_scores_fo_ilql_16000_steps.json \
  $R/maze_scores_fo_cosine_seed0.json $R/maze_scores_fo_cosine_seed1.json $R/maze_scores_fo_cosine_seed2.json \
  $R/maze_scores_po_cpu_bc.json $R/maze_scores_po_cpu_ilql_4500_steps.json \
  $R/maze_scores_po_rope_cosine_2000_seed0.json $R/maze_scores_po_rope_cosine_2000_seed1.json \
  $R/maze_scores_po_rope_cosine_2000_seed2.json $R/maze_scores_po_rope_cosine_2000_mc_seed0.json \
  $R/maze_scores_po_rope_cosine_2000_mc_sweep_seed0.json $R/maze_scores_po_rope_cosine_2000_mc_sweep_seed1.json \
  $R/maze_scores_po_rope_cosine_2000_mc_sweep_seed2.json \
  $R/maze_online_fo.json $R/maze_online_po_online_filtered_bc.json \
  $R/maze_online_po_ppo_rope_seed0.json $R/maze_online_po_ppo_rope_seed1.json $R/maze_online_po_ppo_rope_seed2.json \
  $R/wordle_scores.json $R/wordle_scores_last_token.json $R/endgames_scores_online_bc.json $R/endgames_scores.json $R/chess_scores.json $R/questions_scores_twenty_questions_online.json \
  $R/questions_scores_twenty_questions_ppo_sampled_tokens.json $R/questions_scores_twenty_questions_ppo_no_trunk_grad.json \
  $R/questions_scores_twenty_questions_ppo_no_trunk_grad_seed1.json $R/questions_scores_twenty_questions_ppo_no_trunk_grad_seed2.json \
  $R/questions_scores_twenty_questions_online_bc_sampled_tokens.json $R/questions_scores.json \
  $R/questions_scores_guess_city_ppo_sampled_tokens_seed0.json $R/questions_scores_guess_city_ppo_sampled_tokens_seed1.json \
  $R/questions_scores_guess_city_ppo_sampled_tokens_seed2.json \
  $R/questions_scores_guess_city_online_onlineBC_seed1.json $R/questions_scores_guess_city_online_onlineBC_seed2.json $R/car_dealer_scores_online.json $R/car_dealer_scores.json $R/car_dealer_scores_sampled_tokens.json \
  $R/textnav_scores.json $R/textnav_scores_po_sampled_tokens.json $R/textnav_scores_po_bc_cosine.json \
  $R/textnav_scores_po_bc_cosine_seed1.json $R/textnav_scores_po_bc_cosine_seed2.json $R/textnav_scores_fo_bc_cosine.json \
  --out $R/report "$@"
