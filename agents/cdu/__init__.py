"""Code Developer University (chapter 9 of *Serverless Architectures on AWS*) on Firelake.

Students submit code; a scoring agent runs it against the challenge's tests in a sandbox;
a profile agent keeps XP and solved challenges; leaderboards rank students overall and per
language. The example's configuration, challenges, saved queries and replay cases live in
``firelake/examples/cdu/``; see the README section "Code Developer University".
"""
