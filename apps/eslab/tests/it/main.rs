mod projections;
