from lmforge import third_party_noise

third_party_noise.install()
