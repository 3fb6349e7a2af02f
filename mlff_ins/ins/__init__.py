"""One INS engine fed by any vibrational source (phonon modes, an MD trajectory's DOS and MSD):
incoherent approximation, multiphonon orders, Debye–Waller factors, coherent powder S(Q,E)."""
