"""The field's open tracker and ownership data sets: which organisation a host belongs to,
according to v2fly's domain-list-community, NextDNS's native tracking domains, AdGuard's
companiesdb, Ghostery's trackerdb, DuckDuckGo's Tracker Radar, Exodus Privacy and X-Ray.

Each data set is read by one reader in :mod:`auditor.intel.formats` (a tree of files or one
file in, a :class:`ParsedDataset` of entities and rules out), compiled into a small gzip'd JSON
document and matched by :class:`DatasetIndex`. The snapshots whose licences allow it (MIT) are
bundled under ``auditor/intel/data/datasets/`` (built by ``scripts/build_datasets``); the others
are imported by the user from a copy they downloaded (:func:`import_dataset`) and stored under
``<data dir>/intel/datasets/<id>/``. docs/datasets.md says what each data set gives, under
which licence, and why it is bundled or not.

This module is the layer's public face; the work is done in:

- :mod:`auditor.intel.dataset_model`: the records and the registry of formats (``FORMATS``)
- :mod:`auditor.intel.dataset_readers`: what the format readers share (``RuleBuilder``...)
- :mod:`auditor.intel.dataset_compiled`: the compiled form, written and read back
- :mod:`auditor.intel.dataset_index`: matching host names (``DatasetIndex``)
- :mod:`auditor.intel.dataset_store`: the bundled and user folders: load, list, import, remove
- :mod:`auditor.intel.archives`: reading a downloaded folder or archive, capped

Only the last two touch the file system.
"""

from __future__ import annotations

from auditor.intel.archives import MAX_MEMBER_BYTES, MAX_TREE_BYTES, MAX_TREE_FILES, read_source
from auditor.intel.dataset_compiled import (
    COMPILED_SCHEMA,
    COMPILED_SUFFIX,
    compile_dataset,
    compiled_bytes,
)
from auditor.intel.dataset_index import DatasetIndex
from auditor.intel.dataset_model import (
    FORMATS,
    INFO_FIELDS,
    DatasetEntity,
    DatasetFormat,
    DatasetInfo,
    DatasetMatch,
    DatasetRule,
    ParsedDataset,
    Reader,
)
from auditor.intel.dataset_readers import (
    MAX_NAME_CHARS,
    MAX_RULES,
    WHOTRACKSME_CATEGORIES,
    RuleBuilder,
    clean_text,
    country_code,
    decode_text,
    finish,
    is_ip_literal,
    iso_date,
    parse_json,
    web_url,
)
from auditor.intel.dataset_store import (
    BUNDLED_DIR,
    import_dataset,
    list_datasets,
    load_datasets,
    parse_source,
    remove_dataset,
    user_data_dir,
)

__all__ = [
    "BUNDLED_DIR",
    "COMPILED_SCHEMA",
    "COMPILED_SUFFIX",
    "FORMATS",
    "INFO_FIELDS",
    "MAX_MEMBER_BYTES",
    "MAX_NAME_CHARS",
    "MAX_RULES",
    "MAX_TREE_BYTES",
    "MAX_TREE_FILES",
    "WHOTRACKSME_CATEGORIES",
    "DatasetEntity",
    "DatasetFormat",
    "DatasetIndex",
    "DatasetInfo",
    "DatasetMatch",
    "DatasetRule",
    "ParsedDataset",
    "Reader",
    "RuleBuilder",
    "clean_text",
    "compile_dataset",
    "compiled_bytes",
    "country_code",
    "decode_text",
    "finish",
    "import_dataset",
    "is_ip_literal",
    "iso_date",
    "list_datasets",
    "load_datasets",
    "parse_json",
    "parse_source",
    "read_source",
    "remove_dataset",
    "user_data_dir",
    "web_url",
]
