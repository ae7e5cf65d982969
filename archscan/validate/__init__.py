"""The validate stage: real reconstruction attacks, image metrics, the zoo run and its plots."""
