"""The paper's method: losses (Eqs. 1, 2, 4), trajectory optimisation, directions, inversion, PV and its sweep."""
