"""Which hashing methods exist, and what a name in ``hashing.methods`` means.

Built-in feature hashers (:data:`cbir.hashing.HASHERS`) and deep hashing methods
(:data:`cbir.deephash.LOSSES`), with the plug-ins installed beside them (:mod:`cbir.plugins`, found
without importing them); a deep method trains end to end under its name and as a hash layer on the
frozen features under its name + ``_head``. Also the config checks that concern plug-ins (called by
:func:`cbir.config.validate_config`). Importing this module imports neither torch nor a plug-in.
"""

from __future__ import annotations

from cbir import plugins

#: Feature hashers (cbir.hashing.HASHERS) and the ones with an options section under ``hashing``.
FEATURE_HASHERS = ("ba", "itq", "pcah", "lsh", "sh", "cca_itq")
OPTION_SECTIONS = ("ba", "cca_itq")
#: Deep hashing methods (cbir.deephash.LOSSES), each trained end to end (its name) or as a hash
#: layer on the frozen features (its name + ``_head``); each has a section under ``hashing``.
DEEP_HASHERS = ("ssdh", "dpsh", "hashnet", "dsh", "greedyhash", "csq")
HEAD_SUFFIX = "_head"
#: Keys of a deep hashing method's section that say how to train, not what to minimise (the loss's options).
DEEP_TRAINING_KEYS = ("start", "joint", "finetune", "head_only")
NETWORK_HASHERS = (*DEEP_HASHERS, *(m + HEAD_SUFFIX for m in DEEP_HASHERS))


def deep_method(name: str) -> str:
    """The deep hashing method of a name in ``hashing.methods``: ``dpsh_head`` -> ``dpsh``."""
    return name.removesuffix(HEAD_SUFFIX)


def feature_hashers() -> tuple[str, ...]:
    """The hashers fitted on features: :data:`FEATURE_HASHERS` and the hasher plug-ins."""
    return (*FEATURE_HASHERS, *plugins.names(plugins.HASHERS))


def deep_hashers() -> tuple[str, ...]:
    """The deep hashing methods: :data:`DEEP_HASHERS` and the loss plug-ins."""
    return (*DEEP_HASHERS, *plugins.names(plugins.LOSSES))


def network_hashers() -> tuple[str, ...]:
    """Every name of a deep hashing method in ``hashing.methods``: end to end and ``_head``."""
    return (*deep_hashers(), *(m + HEAD_SUFFIX for m in deep_hashers()))


def hasher_spec(config: dict, method: str) -> tuple[str, dict]:
    """(registry name, options) of a feature hasher named in ``hashing.methods``: a built-in
    method or a plug-in with its section's options, or a variant of ``hashing.variants`` (its
    method, with the variant's options over that method's section)."""
    hashing = config["hashing"]
    variant = dict(hashing["variants"].get(method, {}))
    base = variant.pop("method", method)
    return base, {**hashing.get(base, {}), **variant} if base in (*OPTION_SECTIONS, *plugins.names(plugins.HASHERS)) else {}


#: The mark of a plug-in's section in the schema of :func:`load_schema` (validation ignores unknown keywords).
PLUGIN_SECTION = "x-cbir-plugin"


def plugin_sections(config: dict, schema: dict) -> None:
    """An empty section for each plug-in named in ``hashing.methods`` without one, to be filled in
    with the defaults (a loss's training keys). Only for these: an installed plug-in that a config
    does not use adds nothing to it, so that installing one changes no config's hash nor reruns."""
    sections = schema["properties"]["hashing"]["properties"]
    hashing = config.setdefault("hashing", {})
    for method in hashing.get("methods", []):
        for name in (method, deep_method(method)):
            if PLUGIN_SECTION in sections.get(name, {}):
                hashing.setdefault(name, {})


def plugin_checks(config: dict, schema: dict) -> list[str]:
    """The plug-ins a config uses, named in ``hashing.methods`` or given options in their section:
    each a name of its own (not one of cbir's methods or ``hashing`` keys), loadable, and given
    only options it takes. Only these are imported (a loss plug-in imports torch)."""
    sections = schema["properties"]["hashing"]["properties"]
    taken = {*FEATURE_HASHERS, *NETWORK_HASHERS, *(key for key, section in sections.items() if PLUGIN_SECTION not in section)}
    training = set(schema["$defs"]["deep_training"]["properties"])
    hashing, problems, used = config["hashing"], [], {}

    def given(group: str, name: str) -> set[str]:
        """The options the config gives a plug-in (a loss's section also holds the training keys)."""
        return set(hashing.get(name, {})) - (training if group == plugins.LOSSES else set())

    for i, method in enumerate(hashing["methods"]):
        key = f"hashing.methods.{i}"
        # a hasher of this name, a loss of this name, or the loss of a `<loss>_head`
        candidates = dict.fromkeys([(plugins.HASHERS, method), (plugins.LOSSES, method), (plugins.LOSSES, deep_method(method))])
        named = [(group, name) for group, name in candidates if name in plugins.names(group)]
        if not named or method in hashing["variants"]:  # a variant of a plug-in's name: see _cross_checks
            continue
        described = " and ".join(plugins.describe(group, name) for group, name in named)
        if method in taken or any(name in taken for _, name in named):
            problems.append(f"config key '{key}': {method!r} is cbir's own, and also {described}; rename the plug-in's entry point")
        elif len(named) > 1:
            problems.append(f"config key '{key}': {method!r} names several plug-ins, {described}; rename one of their entry points")
        elif named[0][0] == plugins.LOSSES and named[0][1].endswith(HEAD_SUFFIX):
            problems.append(f"config key '{key}': {described}: a deep hashing plug-in's name cannot end in {HEAD_SUFFIX!r}, the suffix of head-only training")
        else:
            used.setdefault(named[0], key)
    for group in (plugins.HASHERS, plugins.LOSSES):
        for name in plugins.names(group):
            if given(group, name) and name not in taken:
                used.setdefault((group, name), f"hashing.{name}")
    for (group, name), key in used.items():
        try:
            cls = plugins.load(group, name)
        except plugins.PluginError as err:
            problems.append(f"config key '{key}': {err}")
            continue
        allowed = plugins.options(group, cls)
        for option in sorted(given(group, name) - allowed if allowed is not None else ()):
            takes = ", ".join(sorted(allowed)) or "none"
            problems.append(f"config key 'hashing.{name}.{option}': unknown option of {plugins.describe(group, name)}; it takes {takes}")
    return problems
