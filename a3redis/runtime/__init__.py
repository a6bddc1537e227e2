"""Small trio helpers every shell uses: supervision, gathering, the wall
clock and logging."""
