"""The kernels' accuracy in this project's own tests: three lines each."""

from mykernels import jax_softmax, numpy_softmax, torch_softmax

import softmax_suite

# A few cases keep this file quick; without `cases` every case of the catalogue is asked.
CASES = "glossary,tied_max,random_n1k_s1,pos_inf,neg_inf_mask,equal_large"


def test_torch_softmax_and_its_backward():
    softmax_suite.assert_accurate(torch_softmax, framework="torch", cases=CASES)


def test_jax_softmax():
    softmax_suite.assert_accurate(jax_softmax, framework="jax", cases=CASES)


def test_numpy_softmax():
    softmax_suite.assert_accurate(numpy_softmax, cases=CASES)
