"""One module per pipeline step (profile, train, search, export): thin adapters over the
packages that do the work, so an API change there is a change in one small file here.

Each adapter exposes READS (the steps whose outputs it uses), CODE (the source folders
its results depend on), LIBRARIES (the distributions whose versions matter) and
`inputs(exp)` (the part of the config it reads), which the step cache hashes, plus
`run(...)`, which does or resumes the work in the step's folder.
"""
