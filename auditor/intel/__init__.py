"""Who received what a handset sent: endpoint ownership, jurisdiction and IP facts, offline.

The knowledge base is data (``auditor/intel/data/*.yaml``), every fact in it sourced and dated;
:mod:`auditor.intel.kb` loads and queries it, :mod:`auditor.intel.ipdb` gives IP country and AS
facts from bundled databases, :mod:`auditor.intel.index` reads user intel (auditor YAML,
STIX 2.1, hosts files, adblock lists; one parser per format in :mod:`auditor.intel.formats`,
shared helpers in :mod:`auditor.intel.schema`). Records are in :mod:`auditor.intel.model`.
"""

from auditor.intel.model import (
    Attribution,
    Category,
    CountryInfo,
    Fact,
    IntelError,
    IntelImportError,
    IpFacts,
    KnowledgeBaseError,
    MatchedBy,
    Organisation,
    Source,
)

__all__ = [
    "Attribution",
    "Category",
    "CountryInfo",
    "Fact",
    "IntelError",
    "IntelImportError",
    "IpFacts",
    "KnowledgeBaseError",
    "MatchedBy",
    "Organisation",
    "Source",
]
