"""cbir: content-based image retrieval, from datasets to the papers' tables and figures.

Run `snakemake --cores all` for the embedded default (config.yaml), or pass
`--configfile config/paper.yaml` for the papers' reproduction. Rules live in workflow/rules/, one
file per stage; each runs a thin script in workflow/scripts/ that calls the `cbir` package (src/).
"""

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The cbir package in src/ is installed by `uv sync`; the path also serves a plain snakemake.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from cbir.config import ConfigError, read_yaml, typed_overrides, validate_config
from cbir.paths import Layout
from cbir.runlock import RunLocked, check_free, hold

# config.yaml is the default; a --configfile replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# Every check before any job: the config (keys, values, paths, split sizes against the data
# that is there), then that no other run is writing to its results.
try:
    for _file in workflow.configfiles:
        read_yaml(_file)  # snakemake's YAML loader keeps the last of duplicated keys silently
    _config = typed_overrides(config, workflow.config_settings.config)
    validated = validate_config(_config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
    if workflow.is_main_process:
        check_free(Layout.of(validated).run_lock(), validated["results_dir"])
except (ConfigError, RunLocked) as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(validated)


onstart:
    # Taken once jobs are about to run (not for a dry run), held until this process ends.
    if workflow.is_main_process:
        hold(Layout.of(config).run_lock(), config["results_dir"])


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/hashing.smk"
include: "workflow/rules/metric.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
