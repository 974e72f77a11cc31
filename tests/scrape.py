"""Reading a /metrics answer in tests: every sample by name and labels."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict:
    """{(sample name, frozenset of label pairs): value}; also checks that
    the text parses, one family per name."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    samples, names = {}, []
    for family in text_string_to_metric_families(text):
        names.append(family.name)
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    assert len(names) == len(set(names)), "a family appears twice"
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))
