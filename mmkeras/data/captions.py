"""CIFAR-style captions: a seeded generator that pairs each image with a short caption.

Captions are *partially* informative by design, or fusion has nothing to prove:
- each class owns a few attribute phrases, most of them shared with other classes
  ("with wings": airplane and bird; "with four legs": cat, deer, dog, horse; ...) and a
  rarer one or two that are distinctive ("with antlers": deer);
- a caption draws 1 to 3 phrases (shared phrases are drawn `shared_weight` times as often
  as distinctive ones) into one of several templates;
- noise: each phrase is swapped, with probability `phrase_noise`, for a phrase of another
  class, and a fraction `empty_fraction` of captions carry no information at all.

With the defaults a good text-only model lands near 55-60% on CIFAR-10 (measured numbers are
in docs/data.md, "Captions"); images are needed to tell cat from dog or automobile from truck.
CIFAR-100 uses its 20 superclasses as the attribute vocabulary, so text narrows an image
down to a superclass and its neighbours. Any other class list gets attributes drawn
deterministically from a shared pool, so every dataset can be captioned.
"""

import dataclasses

import numpy as np

# Phrases marked with a leading "!" are distinctive (drawn less often).
CIFAR10_ATTRIBUTES = {
    "airplane": ["with wings", "in the sky", "made of metal", "with an engine", "!on a runway"],
    "automobile": ["on wheels", "on a road", "made of metal", "with an engine", "!with four doors"],
    "bird": ["with wings", "in the sky", "with feathers", "small", "!with a beak"],
    "cat": ["with four legs", "with fur", "kept as a pet", "small", "!with whiskers"],
    "deer": ["with four legs", "with fur", "in a forest", "wild", "!with antlers"],
    "dog": ["with four legs", "with fur", "kept as a pet", "with a tail", "!that barks"],
    "frog": ["by the water", "green", "small", "wild", "!that hops"],
    "horse": ["with four legs", "with fur", "in a field", "large", "!with a long mane"],
    "ship": ["by the water", "made of metal", "large", "with an engine", "!in a harbour"],
    "truck": ["on wheels", "on a road", "made of metal", "large", "!carrying cargo"],
}

CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}

CIFAR100_SUPERCLASS_ATTRIBUTES = {
    "aquatic_mammals": ["in the water", "with fur", "that swims", "!with flippers"],
    "fish": ["in the water", "with scales", "that swims", "!with fins"],
    "flowers": ["with petals", "colourful", "in a garden", "!in bloom"],
    "food_containers": ["on a table", "in a kitchen", "made of glass", "!holding food"],
    "fruit_and_vegetables": ["on a table", "colourful", "good to eat", "!freshly picked"],
    "household_electrical_devices": ["indoors", "made of plastic", "with a plug", "!with buttons"],
    "household_furniture": ["indoors", "made of wood", "in a room", "!to sit or lie on"],
    "insects": ["with six legs", "small", "with wings", "!buzzing"],
    "large_carnivores": ["with four legs", "with fur", "wild", "!with sharp teeth"],
    "large_man-made_outdoor_things": ["outdoors", "built by people", "large", "!made of stone"],
    "large_natural_outdoor_scenes": ["outdoors", "in nature", "large", "!under the open sky"],
    "large_omnivores_and_herbivores": ["with four legs", "large", "wild", "!eating plants"],
    "medium_mammals": ["with four legs", "with fur", "wild", "!with a bushy tail"],
    "non-insect_invertebrates": ["small", "with many legs", "with a shell", "!that crawls"],
    "people": ["a person", "with a face", "wearing clothes", "!smiling"],
    "reptiles": ["with scales", "cold-blooded", "wild", "!with a long tail"],
    "small_mammals": ["with four legs", "with fur", "small", "!with whiskers"],
    "trees": ["outdoors", "in nature", "with leaves", "!with a tall trunk"],
    "vehicles_1": ["on wheels", "on a road", "carrying people", "!with a driver"],
    "vehicles_2": ["with an engine", "made of metal", "outdoors", "!with a heavy frame"],
}

# Names a caption may call a CIFAR-10 class by (`CaptionConfig.name_fraction`): the class
# name and near-synonyms. Other classes are called by their name (underscores as spaces).
CIFAR10_NAMES = {
    "airplane": ["airplane", "plane", "aircraft", "jet", "airliner"],
    "automobile": ["automobile", "car", "sedan", "hatchback", "coupe"],
    "bird": ["bird", "sparrow", "finch", "songbird", "ostrich"],
    "cat": ["cat", "kitten", "tabby", "kitty", "feline"],
    "deer": ["deer", "stag", "doe", "fawn", "elk"],
    "dog": ["dog", "puppy", "hound", "terrier", "pup"],
    "frog": ["frog", "toad", "bullfrog", "tree frog", "amphibian"],
    "horse": ["horse", "pony", "stallion", "mare", "foal"],
    "ship": ["ship", "boat", "vessel", "freighter", "steamer"],
    "truck": ["truck", "lorry", "pickup", "dump truck", "fire truck"],
}

# Attributes for class names found in no table: each class draws from this pool.
GENERIC_POOL = [
    "bright", "dark", "round", "long", "tall", "flat", "soft", "shiny", "striped", "spotted",
    "in the sky", "on the ground", "in the water", "indoors", "outdoors", "made of metal",
    "made of wood", "with fur", "with wings", "with wheels", "moving", "still", "old", "new",
]

TEMPLATES = [
    "a photo of something {}.",
    "a picture showing an object {}.",
    "this image shows a thing {}.",
    "something {} can be seen here.",
    "a quick photo of something {}.",
    "here we see an object {}.",
    "a blurry snapshot of something {}.",
]

UNINFORMATIVE = [
    "a photo.",
    "an image of something.",
    "a picture.",
    "what is this?",
    "a blurry snapshot taken outside or inside.",
    "no description available.",
    "",
]


@dataclasses.dataclass
class CaptionConfig:
    """Settings of the caption generator; the defaults are the documented ones."""

    min_phrases: int = 1
    max_phrases: int = 3
    shared_weight: float = 3.0
    phrase_noise: float = 0.2
    empty_fraction: float = 0.1
    # Fraction of informative captions that also name the class (or a near-synonym:
    # CIFAR10_NAMES), as real, model-written captions mostly do. 0 (the default) keeps the
    # captions partially informative and draws nothing extra from the random stream.
    name_fraction: float = 0.0

    def __post_init__(self):
        if not 1 <= self.min_phrases <= self.max_phrases:
            raise ValueError(
                "Need 1 <= min_phrases <= max_phrases. Received "
                f"min_phrases={self.min_phrases}, max_phrases={self.max_phrases}."
            )
        for field in ("phrase_noise", "empty_fraction", "name_fraction"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{field}` must lie in [0, 1]. Received {field}={value}.")
        if self.shared_weight <= 0:
            raise ValueError(f"`shared_weight` must be > 0. Received {self.shared_weight}.")


def class_attributes(class_names, seed=0):
    """Attribute phrases for each class name: from the CIFAR tables, else from the pool."""
    fine_to_super = {f: s for s, fines in CIFAR100_SUPERCLASSES.items() for f in fines}
    rng = np.random.default_rng(seed)
    table = {}
    for name in class_names:
        if name in CIFAR10_ATTRIBUTES:
            table[name] = CIFAR10_ATTRIBUTES[name]
        elif name in fine_to_super:
            table[name] = CIFAR100_SUPERCLASS_ATTRIBUTES[fine_to_super[name]]
        else:
            picks = rng.choice(len(GENERIC_POOL), size=4, replace=False)
            table[name] = [GENERIC_POOL[i] for i in picks[:3]] + ["!" + GENERIC_POOL[picks[3]]]
    return table


def make_captions(labels, class_names, seed=0, config=None):
    """One caption per label, deterministic in (labels, class_names, seed, config)."""
    config = config or CaptionConfig()
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must lie in [0, {len(class_names) - 1}]; received [{labels.min()}, {labels.max()}]."
        )
    table = class_attributes(class_names, seed=0)
    phrases, weights = [], []
    for name in class_names:
        plain = [p.lstrip("!") for p in table[name]]
        w = np.array([1.0 if p.startswith("!") else config.shared_weight for p in table[name]])
        phrases.append(plain)
        weights.append(w / w.sum())
    all_phrases = sorted({p for ps in phrases for p in ps})
    names = [CIFAR10_NAMES.get(name, [name.replace("_", " ")]) for name in class_names]
    rng = np.random.default_rng(seed)
    captions = []
    for label in labels:
        if rng.random() < config.empty_fraction:
            captions.append(UNINFORMATIVE[rng.integers(len(UNINFORMATIVE))])
            continue
        k = int(rng.integers(config.min_phrases, config.max_phrases + 1))
        own = phrases[label]
        k = min(k, len(own))
        chosen = list(rng.choice(len(own), size=k, replace=False, p=weights[label]))
        words = []
        for i in chosen:
            if rng.random() < config.phrase_noise:
                words.append(all_phrases[rng.integers(len(all_phrases))])
            else:
                words.append(own[i])
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        if config.name_fraction and rng.random() < config.name_fraction:
            template = _naming(template, names[label][rng.integers(len(names[label]))])
        captions.append(template.format(_join(words)))
    return np.array(captions, dtype=np.str_)


def _naming(template, name):
    """The template with its stand-in noun ("something", "an object", "a thing") replaced
    by the class's name."""
    article = "an" if name[0] in "aeiou" else "a"
    for stand_in in ("something", "an object", "a thing"):
        if stand_in in template:
            return template.replace(stand_in, f"{article} {name}", 1)
    return f"{article} {name}: {template}"


def _join(words):
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]
