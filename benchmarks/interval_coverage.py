"""Coverage of the verdicts' 95 % interval of Delta on simulated settings with a known Delta.

    python benchmarks/interval_coverage.py SETTINGS IMAGES IMAGE_NOISE SEED_SD_POINTS
    python benchmarks/interval_coverage.py 400 10000 0.3 1.0    # seed spread dominates (CIFAR-sized test set)
    python benchmarks/interval_coverage.py 400 2000 1.0 0.0     # no seed effect: the test set dominates

Probit model of correct answers: correct = [z_image + a_model + u_seed + e_image,seed > 0], z shared by both models
(the pairing), u the training randomness (SEED_SD_POINTS accuracy points per model), e per-image noise. The true
Delta (-1 point) is the expectation over seeds and images. Prints the coverage for 1, 3 and 5 seeds per side and
the one-sided miss rates. Results: docs/findings.md, "Coverage, measured".
"""
import sys, numpy as np
from scipy.stats import norm
from raydw.findings.uncertainty import Bootstrap, resampled_accuracy, delta_interval
def run(k, settings, N, su, se, a_d=0.95, true_delta=-0.01, resamples=500):
    tot = np.sqrt(1 + su**2 + se**2)
    p_d = norm.cdf(a_d / tot); a_t = norm.ppf(p_d + true_delta) * tot
    rng = np.random.default_rng(1000 + k); miss_lo = miss_hi = 0
    for j in range(settings):
        z = rng.standard_normal(N); bits = {}
        for m, a in (("t", a_t), ("d", a_d)):
            for s in range(k):
                bits[(m, s)] = z + a + su * rng.standard_normal() + se * rng.standard_normal(N) > 0
        boot = Bootstrap(resamples, 0.95, seed=j)
        acc = resampled_accuracy(bits, boot, f"sim{j}")
        side = lambda m: [(bits[(m, s)].mean(), acc[(m, s)]) for s in range(k)]
        lo, hi = delta_interval(side("t"), side("d"), 0.95)
        miss_lo += true_delta < lo; miss_hi += true_delta > hi
    return 1 - (miss_lo + miss_hi) / settings, miss_lo / settings, miss_hi / settings
if __name__ == "__main__":
    settings, N, se, sd = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    slope = norm.pdf(norm.ppf(0.75)) / np.sqrt(1 + se**2); su = sd / 100 / slope if sd > 0 else 0.0
    for k in (1, 3, 5):
        c, b, a = run(k, settings, N, su, se)
        print(f"N={N} se={se} seed SD {sd} pts k={k}: coverage {c:.3f} (truth<lo {b:.3f}, truth>hi {a:.3f})", flush=True)
