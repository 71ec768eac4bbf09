"""The node's side of SecAgg+: its update leaves only masked, inside the secure sum.

A study with `secure-aggregation = true` trains through Flower's SecAgg+
protocol (legacy API). Every one of its four stages arrives as a train
message carrying Flower's `secaggplus_configs` record; each is handed to
Flower's own `secaggplus_mod`, which keeps the protocol state in the node's
context. Only in the stage that collects masked vectors does the node train:
`secure_train` turns the legacy `FitIns` into our train content (global
weights under their names, the plan with the study's round), runs
`train_reply` (DP training, privacy ledger, everything), and hands the mod a
`FitRes` with the new weights and the FedAvg weight — no metrics, no site
name. The mod quantises and masks the weights and drops them from the reply;
what leaves is the masked vector, the weight (1, or the rounded size the plan
discloses) and protocol bookkeeping.

Before that, the node refuses what would weaken the protocol or silently
distort its update: a Shamir threshold at or below half the shares, an
unmasking request that lists a site both as surviving and as dropped (both
would reconstruct both masks of one site), and weights or a FedAvg weight
beyond the quantisation range (the quantiser would clip them). The threat
model is Flower's SecAgg+: a coordinator that follows the protocol but is
curious; the sites' key exchange goes through it unauthenticated. Its masks are
expanded from their full 256-bit seeds (`protocols.privacy.secure_aggregation.
expand_mask`), not from Flower's 32-bit fold of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import (RECORD_KEY_CONFIGS,
                                                                  RECORD_KEY_STATE, Key, Stage)
from flwr.compat.common import recorddict_compat as compat

from protocols import messages as keys
from protocols.errors import FedsynthError
from protocols.plan import StudyPlan
from protocols.privacy import secure_aggregation as contract

TrainReply = Callable[[RecordDict], RecordDict]
# The node's state record of the study's min-sites, for the unmasking stage.
SURVIVORS_STATE = "fedsynth.secure-sum"
MIN_SITES = "min-sites"


def is_secure_message(msg: Message) -> bool:
    """True for a train message of the SecAgg+ protocol (any of its four stages)."""
    return msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records


def secure_train(msg: Message, context: Context, train_reply: TrainReply) -> Message:
    """Answer one SecAgg+ stage; in the masked-vector stage, train via `train_reply`."""
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    use_cryptographic_masks()
    if configs.get(Key.STAGE) == Stage.SETUP:
        _refuse_weak_setup(configs)
    if configs.get(Key.STAGE) == Stage.UNMASK:
        _refuse_double_unmask(configs)
        _refuse_too_few_survivors(configs, context)

    def call_next(fit_msg: Message, ctxt: Context) -> Message:
        fitins = fit_msg.content
        names = [str(n) for n in cast(list, fitins.config_records["fitins.config"]
                                      [contract.ARRAY_NAMES])]
        _check_the_session(fitins, ctxt)
        reply = train_reply(train_content(fitins, names))
        fitres = _fitres(reply, names, _ranges_agreed(ctxt))
        return Message(content=compat.fitres_to_recorddict(fitres, keep_input=False),
                       reply_to=fit_msg)

    return secaggplus_mod(msg, context, call_next)


def use_cryptographic_masks() -> None:
    """Have Flower's SecAgg+ mod expand its masks with `expand_mask` (the coordinator's
    workflow does the same, so the masks cancel in the sum)."""
    sys.modules[secaggplus_mod.__module__].pseudo_rand_gen = contract.expand_mask


def train_content(fitins: RecordDict, names: list[str]) -> RecordDict:
    """Our train content {ARRAYS, PLAN} from a legacy FitIns content and the array names."""
    scalars, lists = _legacy_and_list_values(fitins)
    ins = compat.recorddict_to_fitins(scalars, keep_input=True)
    arrays = parameters_to_ndarrays(ins.parameters)
    if len(arrays) != len(names):
        raise FedsynthError(f"The coordinator sent {len(arrays)} arrays under "
                            f"{len(names)} names; refusing to train on them.")
    weights = ArrayRecord({name: Array(a) for name, a in zip(names, arrays, strict=True)})
    return RecordDict({keys.ARRAYS: weights,
                       keys.PLAN: ConfigRecord({**dict(ins.config), **lists})})


def _legacy_and_list_values(fitins: RecordDict) -> tuple[RecordDict, dict[str, list]]:
    """The FitIns content with scalar config values only (what a legacy FitIns holds), and
    the plan's list values apart (the ledger heads the coordinator presents,
    `keys.LEDGER_HEADS`), minus the names list."""
    config = dict(fitins.config_records["fitins.config"])
    config.pop(contract.ARRAY_NAMES)
    lists = {key: value for key, value in config.items() if isinstance(value, list)}
    scalars = {key: value for key, value in config.items() if key not in lists}
    return (RecordDict({"fitins.parameters": fitins.array_records["fitins.parameters"],
                        "fitins.config": ConfigRecord(scalars)}), lists)


def _fitres(reply: RecordDict, names: list[str], ranges: contract.SecureRanges) -> FitRes:
    """The legacy FitRes the mod masks: new weights in the global order and the
    FedAvg weight; nothing else from `reply` goes into it."""
    arrays = reply[keys.ARRAYS]
    if set(arrays.keys()) != set(names):
        raise FedsynthError("The trained weights do not match the global model's layers.")
    values = [arrays[name].numpy() for name in names]
    problem = contract.out_of_range(zip(names, values, strict=True), ranges.clipping_range)
    if problem:
        raise FedsynthError(f"This site's update cannot be securely aggregated without "
                            f"clipping: {problem}. It was not sent.")
    weight = float(reply[keys.METRICS][keys.WEIGHT])
    if not 0 < weight <= ranges.max_weight:
        raise FedsynthError(f"This site's FedAvg weight {weight:g} is outside the secure-"
                            f"aggregation range (0, {ranges.max_weight:g}]. It was not sent.")
    # float64 before the mod quantises: in float32, x + C would round to ulp(C) / 2
    # (3.8e-6 at C = 64), twice the quantisation step.
    wide = [np.asarray(v, dtype=np.float64) for v in values]
    return FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(wide),
                  num_examples=int(weight), metrics={})


def _ranges_agreed(context: Context) -> contract.SecureRanges:
    """The clipping range and maximum weight of this round's SecAgg+ setup."""
    state = context.state.config_records[RECORD_KEY_STATE]
    return contract.SecureRanges(float(cast(float, state["clipping_range"])),
                                 float(cast(float, state["max_weight"])))


def _refuse_weak_setup(configs: ConfigRecord) -> None:
    """Refuse a threshold that lets the coordinator unmask a single site."""
    shares, threshold = int(configs[Key.SHARE_NUMBER]), int(configs[Key.THRESHOLD])
    if 2 * threshold <= shares:
        raise FedsynthError(f"Secure aggregation refused: a threshold of {threshold} of "
                            f"{shares} shares would let the coordinator unmask one site's "
                            "update; it must exceed half the shares.")


def _check_the_session(fitins: RecordDict, context: Context) -> None:
    """Before training: the session SecAgg+ set up must be one the plan's noise is sized
    for. At least `min-sites` sites share keys, and the `colluders` the plan tolerates
    hold fewer key shares than unmask one site alone. Then keep `min-sites` in the
    node's state for the unmasking stage."""
    plan = StudyPlan.from_config(dict(fitins.config_records["fitins.config"]))
    session = context.state.config_records[RECORD_KEY_STATE]
    sites, threshold = int(cast(int, session["share_num"])), int(cast(int, session["threshold"]))
    if sites < plan.min_sites or threshold <= plan.colluders:
        raise FedsynthError(f"Secure aggregation refused: this session shares keys among "
                            f"{sites} site(s) with a threshold of {threshold}, but the plan "
                            f"needs at least {plan.min_sites} sites (min-sites) and more than "
                            f"{plan.colluders} share(s) to unmask (colluders). Nothing was "
                            "trained.")
    context.state.config_records[SURVIVORS_STATE] = ConfigRecord({MIN_SITES: plan.min_sites})


def _refuse_too_few_survivors(configs: ConfigRecord, context: Context) -> None:
    """Every secure sum must hold at least the plan's `min-sites` sites: a family whose
    sites add only shares of the noise sizes them for that many (`colluders` of them
    possibly dishonest). With fewer survivors listed, the node sends no key share. This
    holds against a coordinator that runs SecAgg+ as specified; the survivor list is the
    coordinator's, so a dishonest one is outside this guarantee (as in SecAgg+ itself)."""
    active = set(cast(list[int], configs[Key.ACTIVE_NODE_ID_LIST]))
    remembered = context.state.config_records.get(SURVIVORS_STATE)
    if remembered is None:  # it never trained in this session: nothing of it to unmask
        raise FedsynthError("Secure aggregation refused: this node sent no update in this "
                            "session, so it helps unmask none. No key share was sent.")
    needed = int(cast(int, remembered[MIN_SITES]))
    if len(active) < needed:
        raise FedsynthError(f"Secure aggregation refused: only {len(active)} site(s) are left "
                            f"in the sum, fewer than the plan's min-sites ({needed}); the sum "
                            "would carry less noise than the plan promises. No key share was "
                            "sent.")


def _refuse_double_unmask(configs: ConfigRecord) -> None:
    """A site listed both as surviving and as dropped would have both its mask seed
    and its pairwise-mask key revealed: its own update would be unmasked alone."""
    active = set(cast(list[int], configs[Key.ACTIVE_NODE_ID_LIST]))
    dead = set(cast(list[int], configs[Key.DEAD_NODE_ID_LIST]))
    if active & dead:
        raise FedsynthError("Secure aggregation refused: the coordinator lists site(s) both "
                            "as surviving and as dropped out, which would unmask a single "
                            "site's update; no key share was sent.")
