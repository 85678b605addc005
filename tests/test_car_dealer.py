"""Car Dealer (spec §2.8): the buyer's randomisation, the seller-move grammar, the rule buyer's decisions on hand-made
negotiations, the decision line and its stripping, the fancy and revenue rewards on hand cases, the 50-text limit
and its re-prompt, personalities that change wording but not rules, nonsense seller text, the language-model buyer
(batched, on a tiny GPT-2), the reader of the original's files, and the normalisation constants."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmrl_lightning.data.jsonl import read_episodes
from lmrl_lightning.data.prepare import import_original_data
from lmrl_lightning.env import EpisodeOverError, Text
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_task, summarise
from lmrl_lightning.lm_oracle import LanguageModelOracle, shared_oracle
from lmrl_lightning.models.tokenizer import train_bpe_tokenizer
from lmrl_lightning.registry import EvalEpisode, get_task
from lmrl_lightning.rollout import rollout
from lmrl_lightning.tasks.car_dealer import (
    DATASET_AVERAGE_RETURN,
    EXPERT_RETURN,
    MINIMUM_RETURN,
    N_EVAL_PROFILES,
    CarDealerEnv,
    Decision,
    ExpertSeller,
    IdleSeller,
    LanguageModelBuyer,
    MixedSeller,
    compute_reward,
    eval_episodes,
    expert_price,
    extract_decision,
    generate_dataset,
    PAPER_TABLE1,
    conversation_to_episode,
    parse_seller,
    SELLERS,
)
from lmrl_lightning.tasks.car_dealer.buyer import PHRASES, RuleBuyer
from lmrl_lightning.tasks.car_dealer.profiles import (
    BODY_TYPES,
    BRANDS,
    BUDGETS,
    FEATURES,
    PERSONALITIES,
    BuyerProfile,
    draw_profile,
)

PROFILE = BuyerProfile("polite", "a Toyota", "SUV", ("backup camera", "heated seats"), 50_000)


def negotiate(env: CarDealerEnv, lines, seed: int = 0, profile: BuyerProfile = PROFILE):
    """Play seller `lines` until the buyer decides; (history, rewards, done)."""
    history, rewards, done = env.reset(seed=seed, options={"profile": profile.as_buyer_info()}), [], False
    for line in lines:
        history, reward, done = env.step(history + (Text(line + "\n", True),))
        rewards.append(reward)
        if done:
            break
    return history, rewards, done


# ---- randomisation -------------------------------------------------------------------------------------------------


def test_profiles_are_drawn_from_the_spec_lists():
    profiles = [draw_profile(random.Random(seed)) for seed in range(3000)]
    assert {p.personality for p in profiles} == set(PERSONALITIES) and len(PERSONALITIES) == 10
    assert {p.brand for p in profiles} == set(BRANDS) and len(BRANDS) == 13
    assert {p.body_type for p in profiles} == set(BODY_TYPES) and len(BODY_TYPES) == 6
    assert {p.budget for p in profiles} == {10_000, 30_000, 50_000, 70_000, 90_000} == set(BUDGETS)
    assert Counter(len(p.features) for p in profiles).keys() == {1, 2, 3, 4}
    assert all(len(set(p.features)) == len(p.features) and set(p.features) <= set(FEATURES) for p in profiles)
    assert len(FEATURES) == 8
    assert PROFILE.info_line() == ("Personality: polite. Prefers a Toyota SUV with backup camera, heated seats. "
                                   "Budget: $50,000\n")


def test_reset_draws_the_profile_from_the_seed_or_takes_the_given_one():
    env = CarDealerEnv()
    assert env.reset(seed=7) == (Text("Start\n", False),)
    first = env.profile
    env.reset(seed=7)
    assert env.profile == first
    assert len({(env.reset(seed=s), env.profile)[1] for s in range(50)}) > 40
    env.reset(seed=7, options={"profile": PROFILE.as_buyer_info()})
    assert env.profile == PROFILE
    with pytest.raises(LMRLError, match="options.profile.budget"):
        env.reset(options={"profile": {**PROFILE.as_buyer_info(), "budget": "lots"}})


def test_evaluation_uses_fixed_profiles_several_times_each():
    episodes = eval_episodes("default", get_task("car_dealer").default_eval_episodes)
    assert len(episodes) == 256 and [e.index for e in episodes] == list(range(256))
    profiles = [json.dumps(e.options["profile"], sort_keys=True) for e in episodes]
    assert len(set(profiles)) == N_EVAL_PROFILES == 64
    assert all(profiles[i] == profiles[i % 64] for i in range(256))
    assert eval_episodes("default", 256) == episodes


# ---- grammar ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,kinds,price,off,percent", [
    ("Hello! What kind of car are you looking for?", ["greet", "ask_needs"], None, None, None),
    ("What's your budget?", ["ask_budget"], None, None, None),
    ("This Toyota SUV has a rear camera and heated seats.", ["features", "model"], None, None, None),
    ("The MSRP is $32,000.", ["price"], 32_000, None, None),
    ("It's 32k.", ["price"], 32_000, None, None),
    ("I can give you $2,000 off.", ["discount"], None, 2_000, None),
    ("I'll knock off another $800.", ["discount"], None, 800, None),
    ("Tell you what, I can lower it to $29,500.", ["price", "discount"], 29_500, None, None),
    ("10% off today only!", ["discount"], None, None, 0.10),
    ("I can do a discount.", ["discount"], None, None, 0.05),
    ("It was $30,000, now $27,000 with the discount.", ["price", "discount"], 27_000, None, None),
    ("How about $27,000?", ["price"], 27_000, None, None),
    ("Sorry, that's my final price. No discounts.", ["hold_firm"], None, None, None),
    ("Compared to the Honda, the Toyota is better.", ["model", "compare"], None, None, None),
    ("Do we have a deal?", ["close"], None, None, None),
    ("We have 3 models from 2023.", [], None, None, None),
    ("asdf qwer zxcv", [], None, None, None),
])
def test_the_grammar_reads_each_documented_move(text, kinds, price, off, percent):
    move = parse_seller(text)
    assert move.kinds == kinds
    assert (move.price, move.discount_amount, move.discount_percent) == (price, off, percent)


# ---- the rule buyer --------------------------------------------------------------------------------------------------


def test_willingness_to_pay_follows_budget_fit_and_described_features():
    buyer = RuleBuyer(PROFILE)
    assert buyer.willingness_to_pay() == int(50_000 * 1.1 * 0.85)  # preferred model, no feature described
    buyer.respond("It has a backup camera.")
    assert buyer.willingness_to_pay() == int(50_000 * 1.1 * 0.95)
    buyer.respond("And heated seats.")
    assert buyer.willingness_to_pay() == int(50_000 * 1.1 * 1.05) == 57_750
    buyer.respond("Or how about a Ford truck instead?")  # another brand and body type
    assert buyer.willingness_to_pay() == int(50_000 * 1.1 * 0.8 * 0.8 * 1.05)


def test_a_good_deal_is_accepted_at_once_and_the_decision_is_stripped():
    env = CarDealerEnv(journal={})
    history, rewards, done = negotiate(env, ["Hi! What are you looking for?", "The price is $39,000."], seed=3)
    # 39,000 <= 0.85 x 46,750: accepted at once; msrp = the list price, reward 39,000 / ((50,000 + 39,000) / 2)
    assert done and rewards == [0.0, pytest.approx(39_000 / 44_500)]
    assert env.decision == Decision(True, 39_000, 39_000) and env.success()
    assert "Output:" not in "".join(t.text for t in history) and history[-1].text.endswith("\n")
    assert env.journal[3]["output"] == {"car_bought": True, "msrp": 39_000, "buy_price": 39_000}


def test_a_fair_price_is_haggled_once_then_accepted_when_the_seller_holds_firm():
    _, rewards, done = negotiate(CarDealerEnv(), [
        "Hello, what are you looking for?", "It has a backup camera and heated seats.", "The price is $55,000.",
        "That's my final price."])
    assert done and rewards[-1] == pytest.approx(55_000 / 52_500) and rewards[:-1] == [0.0] * 3


def test_a_price_above_willingness_to_pay_is_refused_after_two_firm_holds():
    env = CarDealerEnv()
    history, rewards, done = negotiate(env, ["The price is $60,000.", "Final price.", "Final price, take it or leave it."])
    assert done and len(rewards) == 3 and env.decision == Decision(False, 60_000)
    assert rewards[-1] == pytest.approx(-(50_000 - 60_000) / 60_000)
    assert any(p.format(price="$60,000") in history[-1].text for p in PHRASES["walk_out"])


def test_discounts_lower_the_offer_until_the_buyer_accepts():
    env = CarDealerEnv()
    # WTP 46,750. 60,000 -> 55,000 -> 49,500 (10% off): still too much, but discounting turns are no refusals;
    # 45,000 is within WTP (above 0.85 x WTP): the buyer asks once for better, then accepts the firm hold.
    _, rewards, done = negotiate(env, ["The price is $60,000.", "I can give you $5,000 off.", "10% off that.",
                                       "Alright, $45,000.", "That's my final price."])
    assert done and len(rewards) == 5 and rewards[:-1] == [0.0] * 4
    assert env.decision == Decision(True, 60_000, 45_000) and rewards[-1] == pytest.approx(45_000 / 55_000)


def test_the_msrp_is_clipped_to_half_and_one_and_a_half_budgets():
    env = CarDealerEnv()
    negotiate(env, ["The price is $500,000.", "Final price.", "That's my final price."])
    assert env.decision == Decision(False, 75_000)  # capped at 1.5 x budget: reward 1/3 at most for a refusal
    _, rewards, _ = negotiate(env, ["The price is $1,000.", "Final price."])
    assert env.decision == Decision(True, 25_000, 1_000)  # floored at half the budget
    assert rewards[-1] == pytest.approx(1_000 / 37_500)


def test_a_seller_who_never_names_a_price_earns_zero():
    env = CarDealerEnv()
    history, rewards, done = negotiate(env, ["Hmm."] * 30)
    assert done and set(rewards) == {0.0} and env.decision == Decision(False, 50_000)
    assert len(rewards) < 25  # patience runs out before the 50-text limit


@pytest.mark.parametrize("text", ["", "\n", "x" * 1_000_000, "\x00\x07\x1b[31m", "\ud800\udfff\ud83d", "$" * 5000,
                                  "$99999999999999999999999", "Output: Decision=Reject MSRP=",
                                  "10000000000000% off", "🚗" * 100])
def test_nonsense_seller_text_gets_a_reply(text):
    env = CarDealerEnv()
    history = env.reset(seed=1)
    new_history, reward, done = env.step(history + (Text(text, True),))
    assert new_history[:-1] == history + (Text(text, True),)
    assert isinstance(new_history[-1].text, str) and new_history[-1].text.strip() and not new_history[-1].is_action
    assert reward == 0.0 and not done  # one odd line does not end the negotiation


def test_step_after_the_decision_or_before_reset_is_refused():
    env = CarDealerEnv()
    with pytest.raises(EpisodeOverError):
        env.step((Text("Start\n", False), Text("Hi\n", True)))
    history, _, done = negotiate(env, ["The price is $20,000."])
    assert done
    with pytest.raises(EpisodeOverError):
        env.step(history + (Text("Hi\n", True),))


# ---- personalities ---------------------------------------------------------------------------------------------------


def test_personalities_change_wording_but_not_rules():
    outcomes, transcripts = set(), set()
    for personality in PERSONALITIES:
        profile = BuyerProfile(personality, *list(vars(PROFILE).values())[1:])
        for seed in range(40):
            env = CarDealerEnv()
            episode = rollout(env, MixedSeller(), [EvalEpisode(seed, seed, {"profile": profile.as_buyer_info()})])[0]
            outcomes.add((seed, episode.total_reward, episode.num_actions, episode.success))
            transcripts.add((seed, "".join(t.text for t in episode.turns if not t.is_action)))
    assert len(outcomes) == 40  # each seed: the same reward, length and purchase for all ten personalities
    assert len(transcripts) > 40 * 8  # but (nearly) every personality words it differently


# ---- decision line and reward ----------------------------------------------------------------------------------------


def test_decision_lines_are_read_and_stripped():
    line = "Fine, deal. Output: Decision=Accept MSRP=$40,000 Buy Price=$38,500 Thanks!"
    assert extract_decision(line) == (Decision(True, 40_000, 38_500), "Fine, deal. Thanks!")
    assert extract_decision("No. Output: Decision=Reject MSRP=$25,000") == (Decision(False, 25_000), "No.")
    assert extract_decision("Output: Decision=Accept MSRP=$0 Buy Price=$5")[0] is None  # MSRP cannot be 0
    assert extract_decision("I'll think about it.") == (None, "I'll think about it.")
    assert extract_decision("Output: Decision=Accept MSRP=$" + "9" * 40)[0] is None
    for decision in (Decision(True, 31_000, 29_900), Decision(False, 75_000)):
        assert extract_decision("ok " + decision.output_text())[0] == decision


def test_fancy_and_revenue_rewards_on_hand_cases():
    assert compute_reward(50_000, Decision(True, 60_000, 55_000)) == pytest.approx(1.0)  # 55k / 55k
    assert compute_reward(30_000, Decision(True, 30_000, 24_000)) == pytest.approx(0.8)
    assert compute_reward(50_000, Decision(False, 40_000)) == pytest.approx(-0.25)  # -(50k - 40k) / 40k
    assert compute_reward(50_000, Decision(False, 75_000)) == pytest.approx(1 / 3)
    assert compute_reward(50_000, Decision(True, 0, 10)) == 0.0
    assert compute_reward(50_000, Decision(True, 40_000, None)) == 0.0
    assert compute_reward(50_000, Decision(True, 60_000, 55_000), "revenue") == 55.0
    assert compute_reward(50_000, Decision(False, 60_000), "revenue") == 0.0
    env = CarDealerEnv(reward_mode="revenue")
    _, rewards, _ = negotiate(env, ["The price is $39,000."])
    assert rewards == [39.0]
    with pytest.raises(LMRLError, match="reward_mode"):
        CarDealerEnv(reward_mode="profit")


# ---- the conversation limit ------------------------------------------------------------------------------------------


class ScriptedOracle:
    """Stands in for `LanguageModelOracle`: answers every prompt with `reply`, and prompts ending in the decision
    re-prompt with `decision`; records the prompts of each call."""

    def __init__(self, reply: str, decision: str = ""):
        self.reply, self.decision, self.calls = reply, decision, []

    def complete(self, prompts):
        self.calls.append(list(prompts))
        return [self.decision if p.endswith("Output: Decision=") else self.reply for p in prompts]


@pytest.mark.parametrize("decision,reward,bought", [
    ("Accept MSRP=$40,000 Buy Price=$36,000\nSeller: thanks", 36_000 / 45_000, True),
    ("Reject MSRP=$40,000", -0.25, False),
    ("I don't know", 0.0, False),
])
def test_the_buyer_is_reprompted_for_a_decision_at_fifty_texts(decision, reward, bought):
    oracle = ScriptedOracle("Hmm, tell me more.", decision)
    env = CarDealerEnv(buyer=LanguageModelBuyer(oracle=oracle))
    history, rewards, done = negotiate(env, [f"Line {k}." for k in range(40)])
    assert done and len(rewards) == 25 and len(history) - 1 == 50  # 25 seller + 25 buyer texts
    assert rewards[:-1] == [0.0] * 24 and rewards[-1] == pytest.approx(reward) and env.success() == bought
    (reprompt,) = oracle.calls[-1]
    assert reprompt.endswith("Line 24.\nHmm, tell me more. Output: Decision=")
    assert reprompt.startswith("Start\n" + PROFILE.info_line() + "Line 0.\nHmm, tell me more.\nLine 1.\n")


def test_the_limit_counts_the_conversation_not_the_history_passed_in():
    """A caller that passes only the last texts (a cut history) still meets the buyer's decision at the limit."""
    env = CarDealerEnv(max_conversation_length=4)
    history = env.reset(seed=1, options={"profile": PROFILE.as_buyer_info()})
    history, _, done = env.step(history + (Text("Hi!\n", True),))
    assert not done
    _, _, done = env.step(history[-1:] + (Text("What's your budget?\n", True),))  # 2 texts passed, 4 spoken
    assert done and env.decision is not None


def test_the_rule_buyer_decides_when_the_limit_is_reached():
    env = CarDealerEnv(max_conversation_length=4)
    _, rewards, done = negotiate(env, ["Hi!", "The price is $45,000."])  # within WTP, not yet accepted
    assert done and env.decision == Decision(True, 45_000, 45_000) and rewards[-1] == pytest.approx(45_000 / 47_500)
    _, rewards, done = negotiate(env, ["Hi!", "What's your budget?"])  # no price: a refusal at the budget
    assert done and env.decision == Decision(False, 50_000) and rewards == [0.0, 0.0]


# ---- the language-model buyer ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_buyer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("buyer")
    texts = ["Start\n", PROFILE.info_line(), "Hello! What are you looking for?\n", "I want a Toyota SUV.\n",
             "Output: Decision=Accept MSRP=$40,000 Buy Price=$38,000\n"]
    tokenizer = train_bpe_tokenizer(texts * 4, 300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=256, vocab_size=len(tokenizer),
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def test_a_language_model_buyer_answers_a_batch_of_episodes_in_one_call(tiny_buyer_dir):
    oracle = LanguageModelOracle(tiny_buyer_dir, max_new_tokens=8, batch_size=64)
    buyer = LanguageModelBuyer(oracle=oracle, max_prompt_tokens=64)
    envs = [CarDealerEnv(buyer=buyer) for _ in range(5)]
    histories = [env.reset(seed=s) for s, env in enumerate(envs)]
    actions = [h + (Text(f"Hello number {k}! What are you looking for?\n", True),) for k, h in enumerate(histories)]
    results = CarDealerEnv.step_many(envs, actions)
    assert buyer.calls == 1  # one oracle call for the five episodes
    for env, action, (history, reward, done) in zip(envs, actions, results):
        assert history[:-1] == action and not history[-1].is_action and "\n" not in history[-1].text[:-1]
        assert reward == 0.0 or done
    prompt = buyer.prompt(envs[0].profile, actions[0])
    assert len(oracle.tokenizer(prompt)["input_ids"]) <= 64  # left-truncated
    assert prompt.endswith("Hello number 0! What are you looking for?\n")
    # The same model through the task's env options, reused by every env it makes.
    task = get_task("car_dealer")
    env = task.make_env("default", buyer_model=str(tiny_buyer_dir), buyer_max_new_tokens=4)
    assert env.buyer is task.make_env("default", buyer_model=str(tiny_buyer_dir), buyer_max_new_tokens=4).buyer
    assert env.copy().buyer is env.buyer
    # The model itself is loaded once per process, shared with any task that asks for the same settings.
    assert env.buyer.oracle is shared_oracle(str(tiny_buyer_dir), "cpu", batch_size=32, max_new_tokens=4)
    with pytest.raises(LMRLError, match="unknown option"):
        task.make_env("default", buyer="gpt2")
    with pytest.raises(LMRLError, match="buyer_batch_size must be an integer"):
        task.make_env("default", buyer_model=str(tiny_buyer_dir), buyer_batch_size="many")
    with pytest.raises(LMRLError, match="does not exist"):
        task.make_env("default", buyer_model=str(tiny_buyer_dir / "missing"))


def test_step_many_of_rule_buyers_equals_stepping_one_by_one():
    lines = ["Hi! What's your budget?", "It has a sunroof. The price is $30,000.", "$2,000 off.", "Deal?"]
    one_by_one = []
    for seed in range(6):
        env = CarDealerEnv()
        history = env.reset(seed=seed)
        for line in lines:
            history, reward, done = env.step(history + (Text(line + "\n", True),))
            one_by_one.append((seed, history, reward, done))
            if done:
                break
    envs = [CarDealerEnv() for _ in range(6)]
    histories = [env.reset(seed=s) for s, env in enumerate(envs)]
    batched, live = [], list(range(6))
    for line in lines:
        results = CarDealerEnv.step_many([envs[i] for i in live], [histories[i] + (Text(line + "\n", True),)
                                                                    for i in live])
        for i, (history, reward, done) in zip(live, results):
            histories[i] = history
            batched.append((i, history, reward, done))
        live = [i for i, r in zip(live, results) if not r[2]]
    assert sorted(batched, key=lambda r: (r[0], len(r[1]))) == sorted(one_by_one, key=lambda r: (r[0], len(r[1])))


# ---- the original's files --------------------------------------------------------------------------------------------

ORIGINAL = [
    {"buyer_info": PROFILE.as_buyer_info(),
     "lines": [{"role": "Dealer", "text": "Hi! How can I help?"}, {"role": "Buyer", "text": "I want a Toyota SUV."},
               {"role": "Buyer", "text": "With heated seats."}, {"role": "Dealer", "text": "It's $40,000."},
               {"role": "Dealer", "text": "Deal?", "purchase_prob": 0.9, "purchase_price": 40000},
               {"role": "Buyer", "text": "Yes."}],
     "output": {"car_bought": True, "msrp": 42_000, "buy_price": 40_000}},
    {"buyer_info": {**PROFILE.as_buyer_info(), "budget": 30_000},
     "lines": [{"role": "Seller", "text": "Hello."}, {"role": "Buyer", "text": "Hi."}]},
]


def test_the_original_file_format_is_read_as_seller_episodes(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(ORIGINAL, indent=4))
    stats = import_original_data("car_dealer", None, path, tmp_path / "dataset", vocab_size=300)
    first, second = read_episodes(tmp_path / "dataset" / "train.jsonl")
    assert [(t.text, t.is_action) for t in first.turns] == [
        ("Start\n", False), ("Hi! How can I help?\n", True), ("I want a Toyota SUV. With heated seats.\n", False),
        ("It's $40,000. Deal?\n", True), ("Yes.\n", False)]
    assert [t.reward for t in first.turns] == [0, 0, 0, pytest.approx(40_000 / 46_000), 0]
    assert first.done and first.success
    assert not second.done and second.total_reward == 0.0 and not second.success
    assert [t.reward for t in conversation_to_episode(ORIGINAL[0], "x", "revenue").turns][3] == 40.0
    assert stats["n_episodes"]["ours"] == 2 and stats["success_rate"]["ours"] == 0.5
    assert stats["mean_length"]["paper"] == PAPER_TABLE1["mean_length"]
    assert (tmp_path / "dataset" / "manifest.json").is_file() and (tmp_path / "dataset" / "tokenizer").is_dir()


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c[1].pop("lines"), r"train.json: record 1: missing field 'lines'"),
    (lambda c: c[1]["lines"].__setitem__(0, {"role": "Customer", "text": "x"}),
     r"record 1: lines\[0\].role: 'Customer' is not one of Dealer, Seller, Buyer"),
    (lambda c: c[0]["output"].__setitem__("msrp", "a lot"), r"record 0: output.msrp: expected a number"),
    (lambda c: c[0]["buyer_info"].__setitem__("budget", None), r"record 0: buyer_info.budget"),
    (lambda c: c[1].__setitem__("lines", [{"role": "Buyer", "text": "Hi."}]), r"record 1: lines: no line of the seller"),
    (lambda c: c[0]["lines"].__setitem__(0, {"role": "Dealer", "text": "bad\x07bell"}), r"record 0.*control character"),
])
def test_a_bad_original_file_is_one_line_naming_file_line_and_field(tmp_path, mutate, message):
    conversations = json.loads(json.dumps(ORIGINAL))
    mutate(conversations)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(conversations, indent=4))
    with pytest.raises(LMRLError, match=message) as error:
        import_original_data("car_dealer", None, path, tmp_path / "out")
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
    path.write_text("{\"not\": \"a list\"}")
    with pytest.raises(LMRLError, match="train.json: expected a JSON array"):
        import_original_data("car_dealer", None, path, tmp_path / "out")
    path.write_text("[{\"lines\": [}]")
    with pytest.raises(LMRLError, match=r"train.json: invalid JSON"):
        import_original_data("car_dealer", None, path, tmp_path / "out")


# ---- normalisation ---------------------------------------------------------------------------------------------------


def test_normalisation_constants_are_the_idle_and_expert_sellers_returns():
    protocol = EvaluationProtocol("car_dealer")
    idle = summarise(evaluate_task(IdleSeller(), protocol))
    expert = summarise(evaluate_task(ExpertSeller(), protocol))
    assert idle.mean_return == MINIMUM_RETURN == 0.0 and idle.success_rate == 0.0
    assert expert.mean_return == pytest.approx(EXPERT_RETURN, abs=1e-4) and expert.success_rate == 1.0
    assert expert.mean_return <= 2 * 1.155 / 2.155  # the fancy reward's ceiling under the rule buyer
    assert expert_price(PROFILE) == 57_700
    normalise = get_task("car_dealer").normalisation["default"]
    assert normalise(0.0) == 0.0 and normalise(DATASET_AVERAGE_RETURN) == 50.0 and normalise(EXPERT_RETURN) == 100.0


@pytest.mark.slow
def test_a_small_dataset_matches_the_recorded_average_and_table_1(tmp_path):
    stats = generate_dataset(tmp_path, n_episodes=600, seed=1, progress=False)
    assert stats["mean_return"]["ours"] == pytest.approx(DATASET_AVERAGE_RETURN, abs=0.06)
    assert stats["success_rate"]["ours"] == pytest.approx(0.53, abs=0.08)  # paper Table 1
    episodes = read_episodes(tmp_path / "train.jsonl")
    assert {e.meta["style"] for e in episodes} == {"discount", "feature", "concise"}
    for episode in episodes[:50]:
        output = episode.meta["output"]
        assert episode.success == output["car_bought"]
        info = BuyerProfile.from_buyer_info(episode.meta["buyer_info"])
        expected = compute_reward(info.budget, Decision(output["car_bought"], output["msrp"], output["buy_price"]))
        assert episode.total_reward == pytest.approx(expected)
        assert all("Output:" not in t.text for t in episode.turns)


@pytest.mark.parametrize("seller", ["concise", "discount", "feature"])
def test_every_scripted_opening_asks_what_the_buyer_needs_before_naming_the_car(seller):
    """A seller's first line must ask about needs (the buyer then says what it wants): quoting the hidden
    profile's car without asking would teach the dataset's policy facts it was never told."""
    seller_class = SELLERS[seller]
    profile = draw_profile(random.Random(0))
    for seed in range(20):
        rng = random.Random(seed)
        opening = seller_class().say(0, profile, seller_class().settings(profile, rng), rng)
        assert parse_seller(opening).ask_needs, opening
